package com.mfndeploy.demo

import org.json.JSONArray
import org.json.JSONObject
import java.io.File

/**
 * Enrolled faces: name -> embedding, kept as JSON in the app's private storage
 * (filesDir/gallery.json). Several enrolments of one name are kept as separate
 * rows; matching takes the best row.
 */
class Gallery(private val file: File) {
    class Entry(val name: String, val embedding: FloatArray)

    private val entries = mutableListOf<Entry>()

    init {
        if (file.isFile) {
            val rows = JSONObject(file.readText()).getJSONArray("faces")
            for (i in 0 until rows.length()) {
                val row = rows.getJSONObject(i)
                val e = row.getJSONArray("embedding")
                entries += Entry(row.getString("name"), FloatArray(e.length()) { e.getDouble(it).toFloat() })
            }
        }
    }

    val size: Int get() = entries.size
    val names: List<String> get() = entries.map { it.name }.distinct()
    fun embeddings(): List<FloatArray> = entries.map { it.embedding }
    fun nameAt(index: Int): String = entries[index].name

    fun add(name: String, embedding: FloatArray) {
        entries += Entry(name, embedding.copyOf())
        save()
    }

    fun clear() {
        entries.clear()
        save()
    }

    // Write-then-rename, so a crash never leaves a half-written gallery.
    private fun save() {
        val rows = JSONArray()
        for (e in entries) {
            val emb = JSONArray()
            e.embedding.forEach { emb.put(it.toDouble()) }
            rows.put(JSONObject().put("name", e.name).put("embedding", emb))
        }
        val tmp = File(file.parentFile, file.name + ".tmp")
        tmp.writeText(JSONObject().put("format", "mfn-demo/gallery-v1").put("faces", rows).toString())
        check(tmp.renameTo(file)) { "could not write $file" }
    }
}
