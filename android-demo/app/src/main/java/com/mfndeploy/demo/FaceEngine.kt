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

/**
 * Kotlin side of the native core (app/src/main/cpp): detection, alignment, embedding and
 * matching all run in C++; this class only moves arrays across JNI. Not thread-safe: use
 * one instance per thread.
 *
 * The `external` declarations must match jni_bridge.cpp and the host test's FaceEngine.java
 * (tests/test_android_host.py checks all three).
 */
class FaceEngine : AutoCloseable {
    private var handle: Long = nativeCreate()

    private var threads = 2
    private var powersave = POWERSAVE_BIG
    private var fp16 = false

    /** Thread count and core policy apply at once; fp16 applies at the next [loadFromAssets]. */
    fun configure(threads: Int, powersave: Int, fp16: Boolean = this.fp16) {
        this.threads = threads
        this.powersave = powersave
        this.fp16 = fp16
        nativeSetOptions(handle, threads, powersave, fp16)
    }

    /**
     * Loads the nets that `mfn-deploy android-assets` copied into assets/[dir]: for each,
     * BASE.param, BASE.bin and BASE.contract. The contract (input size, channel order, mean,
     * scale, blob names, and the embedder's landmark template) comes from the export's
     * manifest; the native core has no built-in preprocessing. Throws IllegalStateException
     * with the core's reason when a file is missing or refused.
     */
    fun loadFromAssets(assets: AssetManager, dir: String = "models") {
        val manifest = JSONObject(assets.open("$dir/assets.json").bufferedReader().use { it.readText() })
        val embedder = manifest.getJSONObject("embedder")
        nativeSetOptions(handle, threads, powersave, fp16)
        val nets = listOf(
            "detector/pnet.ncnn",
            "detector/rnet.ncnn",
            "detector/onet.ncnn",
            "embedder/" + embedder.getString("ncnn_basename"),
        )
        nets.forEachIndexed { which, base ->
            val (param, bin, contract) = listOf("param", "bin", "contract").map { ext ->
                try {
                    assets.open("$dir/$base.$ext").use { it.readBytes() }
                } catch (e: java.io.IOException) {
                    throw IllegalStateException("$dir/$base.$ext missing: rerun mfn-deploy android-assets", e)
                }
            }
            check(nativeLoadNet(handle, which, param, bin, contract)) { "$dir/$base: ${nativeLastError(handle)}" }
        }
    }

    /** Why the last load, detect or embed failed; empty when it did not. */
    fun lastError(): String = nativeLastError(handle)

    fun detect(frame: Frame): List<Face> {
        val flat = nativeDetect(handle, frame.pixels, frame.width, frame.height, frame.stride, frame.format)
        return (0 until flat.size / FACE_FLOATS).map { i ->
            val o = i * FACE_FLOATS
            Face(RectF(flat[o], flat[o + 1], flat[o + 2], flat[o + 3]), flat[o + 4], flat.copyOfRange(o + 5, o + 15))
        }
    }

    /** L2-normalised embedding of an aligned face; empty if the landmarks are degenerate. */
    fun embed(frame: Frame, face: Face): FloatArray =
        nativeEmbed(handle, frame.pixels, frame.width, frame.height, frame.stride, frame.format, face.landmarks)

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

    fun lastTimes(): StageTimes = nativeLastTimes(handle).let { StageTimes(it[0], it[1], it[2]) }

    fun benchmark(frame: Frame, loops: Int): BenchmarkResult {
        val r = nativeBenchmark(handle, frame.pixels, frame.width, frame.height, frame.stride, frame.format, loops)
        require(r.size == 8) { "benchmark: bad frame" }
        return BenchmarkResult(r[0].toInt(), r[1].toInt(), StageTimes(r[2], r[3], r[4]), StageTimes(r[5], r[6], r[7]))
    }

    fun ncnnVersion(): String = nativeVersion()

    override fun close() {
        if (handle != 0L) {
            nativeDestroy(handle)
            handle = 0L
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
