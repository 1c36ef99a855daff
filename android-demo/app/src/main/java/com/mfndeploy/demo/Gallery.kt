package com.mfndeploy.demo

import org.json.JSONArray
import org.json.JSONObject
import java.io.File

/**
 * Enrolled faces: name -> embedding, kept as JSON in the app's private storage
 * (filesDir/gallery.json). Several enrolments of one name are kept as separate
 * rows; matching takes the best row.
 *
 * Each row records the sha256 of the embedder that computed it ([embedderSha256], the
 * weights file listed in assets.json). Embeddings of two models are not comparable, so
 * rows of another embedder are never matched: they are counted in [stale] and dropped
 * at the next save; the user enrolls again.
 *
 * Threads: [add] and [clear] run on the main thread; the analysis thread reads
 * [snapshot], an immutable list that a change replaces whole (never edits), so a
 * "Clear" during a frame cannot disturb the frame's matching.
 */
class Gallery(private val file: File, private val embedderSha256: String) {
    class Entry(val name: String, val embedding: FloatArray, val embedder: String)

    /** The rows at one moment; never changes after it is made. */
    class Snapshot(entries: List<Entry>) {
        val names: List<String> = entries.map { it.name }
        val embeddings: List<FloatArray> = entries.map { it.embedding }
        val size: Int get() = names.size
    }

    @Volatile private var entries: List<Entry> = emptyList()
    @Volatile private var current: Snapshot = Snapshot(emptyList())

    /** Rows in the file that another embedder computed (or whose format predates the check). */
    var stale: Int = 0
        private set

    init {
        val loaded = load()
        entries = loaded.filter { it.embedder == embedderSha256 && embedderSha256.isNotEmpty() }
        stale = loaded.size - entries.size
        current = Snapshot(entries)
    }

    val size: Int get() = entries.size
    val names: List<String> get() = entries.map { it.name }.distinct()

    /** What the analysis thread matches against: immutable, safe to read on any thread. */
    fun snapshot(): Snapshot = current

    fun add(name: String, embedding: FloatArray) {
        replace(entries + Entry(name, embedding.copyOf(), embedderSha256))
    }

    fun clear() {
        replace(emptyList())
    }

    private fun replace(rows: List<Entry>) {
        save(rows)
        entries = rows
        current = Snapshot(rows)
        stale = 0
    }

    private fun load(): List<Entry> {
        if (!file.isFile) return emptyList()
        return try {
            val rows = JSONObject(file.readText()).getJSONArray("faces")
            (0 until rows.length()).map { i ->
                val row = rows.getJSONObject(i)
                val e = row.getJSONArray("embedding")
                // gallery-v1 rows carry no embedder: treated as another model's.
                Entry(row.getString("name"), FloatArray(e.length()) { e.getDouble(it).toFloat() }, row.optString("embedder", ""))
            }
        } catch (e: org.json.JSONException) {
            emptyList() // a damaged file is an empty gallery, not a crash at start-up
        }
    }

    // Write-then-rename, so a crash never leaves a half-written gallery.
    private fun save(rows: List<Entry>) {
        val out = JSONArray()
        for (e in rows) {
            val emb = JSONArray()
            e.embedding.forEach { emb.put(it.toDouble()) }
            out.put(JSONObject().put("name", e.name).put("embedder", e.embedder).put("embedding", emb))
        }
        val tmp = File(file.parentFile, file.name + ".tmp")
        tmp.writeText(JSONObject().put("format", FORMAT).put("faces", out).toString())
        check(tmp.renameTo(file)) { "could not write $file" }
    }

    companion object {
        const val FORMAT = "mfn-demo/gallery-v2"
    }
}
