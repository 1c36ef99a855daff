package com.mfndeploy.demo

import android.content.res.AssetManager
import android.graphics.RectF
import org.json.JSONObject

/** Interleaved 8-bit pixels as the native core takes them. */
class Frame(
    val pixels: ByteArray,
    val width: Int,
    val height: Int,
    val stride: Int = 0, // bytes per row; 0 = packed
    val format: Int = RGBA,
) {
    companion object {
        const val RGB = 0
        const val RGBA = 1
    }
}

/** One face in frame pixels; landmarks are x, y pairs (eyes, nose tip, mouth corners). */
class Face(val box: RectF, val score: Float, val landmarks: FloatArray)

class StageTimes(val detectMs: Double, val alignMs: Double, val embedMs: Double)

class BenchmarkResult(val loops: Int, val faces: Int, val median: StageTimes, val min: StageTimes)

/** What `mfn-deploy android-assets` says about the embedder in assets/models/assets.json. */
class EmbedderInfo(val basename: String, val sha256: String) {
    companion object {
        /** The embedder's name and the sha256 of its weights (BASE.bin), from [dir]/assets.json. */
        fun read(assets: AssetManager, dir: String = "models"): EmbedderInfo {
            val manifest = JSONObject(assets.open("$dir/assets.json").bufferedReader().use { it.readText() })
            val basename = manifest.getJSONObject("embedder").getString("ncnn_basename")
            val weights = manifest.getJSONObject("files").getJSONObject("embedder/$basename.bin")
            return EmbedderInfo(basename, weights.getString("sha256"))
        }
    }
}

/**
 * Kotlin side of the native core (app/src/main/cpp): detection, alignment, embedding and
 * matching all run in C++; this class only moves arrays across JNI. Not thread-safe: use
 * one instance per thread.
 *
 * After [close] the native engine is gone and its handle is 0: every call is then a no-op
 * that returns nothing (no faces, an empty embedding), so a frame that arrives late cannot
 * reach freed native memory. The bridge refuses handle 0 as well.
 *
 * The `external` declarations must match jni_bridge.cpp and the host test's FaceEngine.java
 * (tests/test_android_host.py checks all three, and the JNI symbols they imply). They must
 * stay members of this class: moved into the companion object they would be
 * `FaceEngine$Companion` natives, which the library does not export.
 */
class FaceEngine : AutoCloseable {
    @Volatile private var handle: Long = nativeCreate()

    private var threads = 2
    private var powersave = POWERSAVE_BIG

    /** Whether the loaded nets run fp16 storage and arithmetic (off unless asked for). */
    var fp16 = false
        private set

    /** What [loadFromAssets] loaded as the embedder; null before. */
    var embedder: EmbedderInfo? = null
        private set

    val isClosed: Boolean get() = handle == 0L

    /** Thread count and core policy apply at once; fp16 applies at the next [loadFromAssets]. */
    fun configure(threads: Int, powersave: Int, fp16: Boolean = this.fp16) {
        this.threads = threads
        this.powersave = powersave
        this.fp16 = fp16
        val h = handle
        if (h != 0L) nativeSetOptions(h, threads, powersave, fp16)
    }

    /**
     * Loads the nets that `mfn-deploy android-assets` copied into assets/[dir]: for each,
     * BASE.param, BASE.bin and BASE.contract. The contract (input size, channel order, mean,
     * scale, blob names, and the embedder's landmark template) comes from the export's
     * manifest; the native core has no built-in preprocessing. Throws IllegalStateException
     * with the core's reason when a file is missing or refused, or the engine is closed.
     */
    fun loadFromAssets(assets: AssetManager, dir: String = "models") {
        val h = handle
        check(h != 0L) { "the face engine is closed" }
        val info = EmbedderInfo.read(assets, dir)
        nativeSetOptions(h, threads, powersave, fp16)
        val nets = listOf(
            "detector/pnet.ncnn",
            "detector/rnet.ncnn",
            "detector/onet.ncnn",
            "embedder/" + info.basename,
        )
        nets.forEachIndexed { which, base ->
            val (param, bin, contract) = listOf("param", "bin", "contract").map { ext ->
                try {
                    assets.open("$dir/$base.$ext").use { it.readBytes() }
                } catch (e: java.io.IOException) {
                    throw IllegalStateException("$dir/$base.$ext missing: rerun mfn-deploy android-assets", e)
                }
            }
            check(nativeLoadNet(h, which, param, bin, contract)) { "$dir/$base: ${nativeLastError(h)}" }
        }
        embedder = info
    }

    /** Why the last load, detect or embed failed; empty when it did not. */
    fun lastError(): String = handle.let { h -> if (h == 0L) "the face engine is closed" else nativeLastError(h) }

    fun detect(frame: Frame): List<Face> {
        val h = handle
        if (h == 0L) return emptyList()
        val flat = nativeDetect(h, frame.pixels, frame.width, frame.height, frame.stride, frame.format)
        return (0 until flat.size / FACE_FLOATS).map { i ->
            val o = i * FACE_FLOATS
            Face(RectF(flat[o], flat[o + 1], flat[o + 2], flat[o + 3]), flat[o + 4], flat.copyOfRange(o + 5, o + 15))
        }
    }

    /** L2-normalised embedding of an aligned face; empty if the landmarks are degenerate. */
    fun embed(frame: Frame, face: Face): FloatArray {
        val h = handle
        if (h == 0L) return FloatArray(0)
        return nativeEmbed(h, frame.pixels, frame.width, frame.height, frame.stride, frame.format, face.landmarks)
    }

    /** Best gallery index (or -1) and its cosine similarity. */
    fun match(query: FloatArray, gallery: List<FloatArray>): Pair<Int, Float> {
        val flat = FloatArray(gallery.sumOf { it.size })
        var o = 0
        for (e in gallery) {
            e.copyInto(flat, o)
            o += e.size
        }
        val r = nativeMatch(query, flat)
        return Pair(r[0].toInt(), r[1])
    }

    fun lastTimes(): StageTimes {
        val h = handle
        if (h == 0L) return StageTimes(0.0, 0.0, 0.0)
        return nativeLastTimes(h).let { StageTimes(it[0], it[1], it[2]) }
    }

    fun benchmark(frame: Frame, loops: Int): BenchmarkResult {
        val h = handle
        check(h != 0L) { "the face engine is closed" }
        val r = nativeBenchmark(h, frame.pixels, frame.width, frame.height, frame.stride, frame.format, loops)
        require(r.size == 8) { "benchmark: bad frame" }
        return BenchmarkResult(r[0].toInt(), r[1].toInt(), StageTimes(r[2], r[3], r[4]), StageTimes(r[5], r[6], r[7]))
    }

    fun ncnnVersion(): String = nativeVersion()

    /** Frees the native engine; later calls do nothing. Call it on the thread that uses the engine. */
    override fun close() {
        val h = handle
        if (h != 0L) {
            handle = 0L
            nativeDestroy(h)
        }
    }

    private external fun nativeCreate(): Long
    private external fun nativeDestroy(handle: Long)
    private external fun nativeSetOptions(
        handle: Long,
        numThreads: Int,
        powersave: Int,
        fp16: Boolean,
    )
    private external fun nativeLoadNet(
        handle: Long,
        which: Int,
        param: ByteArray,
        bin: ByteArray,
        contract: ByteArray,
    ): Boolean
    private external fun nativeLastError(handle: Long): String
    private external fun nativeDetect(
        handle: Long,
        pixels: ByteArray,
        width: Int,
        height: Int,
        stride: Int,
        format: Int,
    ): FloatArray
    private external fun nativeEmbed(
        handle: Long,
        pixels: ByteArray,
        width: Int,
        height: Int,
        stride: Int,
        format: Int,
        landmarks: FloatArray,
    ): FloatArray
    private external fun nativeMatch(query: FloatArray, gallery: FloatArray): FloatArray
    private external fun nativeLastTimes(handle: Long): DoubleArray
    private external fun nativeBenchmark(
        handle: Long,
        pixels: ByteArray,
        width: Int,
        height: Int,
        stride: Int,
        format: Int,
        loops: Int,
    ): DoubleArray
    private external fun nativeVersion(): String

    companion object {
        const val POWERSAVE_ALL = 0
        const val POWERSAVE_LITTLE = 1
        const val POWERSAVE_BIG = 2
        private const val FACE_FLOATS = 15 // box(4), score, landmarks(10)

        init {
            System.loadLibrary("mfndemo")
        }
    }
}
