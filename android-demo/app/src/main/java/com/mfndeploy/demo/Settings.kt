package com.mfndeploy.demo

import android.content.Context

/** Engine settings shared by the live screen and the benchmark screen. */
class Settings(context: Context) {
    private val prefs = context.getSharedPreferences("settings", Context.MODE_PRIVATE)

    var threads: Int
        get() = prefs.getInt("threads", 2)
        set(v) = prefs.edit().putInt("threads", v).apply()

    var powersave: Int
        get() = prefs.getInt("powersave", FaceEngine.POWERSAVE_BIG)
        set(v) = prefs.edit().putInt("powersave", v).apply()

    /**
     * fp16 storage and arithmetic in ncnn, where the CPU has them (ARMv8.2): ncnn's own
     * default, so on. ncnn as released gets its stride-2 depthwise fp16 kernel wrong
     * (MobileFaceNet at cosine 0.93 to fp32); the app builds ncnn with this project's
     * patch for it, which brings fp16 arithmetic back within the fp16 parity gate (see
     * "The fp16 verdict" in the repository README). The benchmark screen shows and
     * changes it; off gives exact fp32 parity with the exporter.
     */
    var fp16: Boolean
        get() = prefs.getBoolean("fp16", FP16_DEFAULT)
        set(v) = prefs.edit().putBoolean("fp16", v).apply()

    /** Cosine threshold of the accept decision; calibrate it with `mfn-deploy evaluate`. */
    var threshold: Float
        get() = prefs.getFloat("threshold", 0.4f)
        set(v) = prefs.edit().putFloat("threshold", v).apply()

    companion object {
        /** The fp16 verdict: the defect was ncnn's and the app's ncnn is patched, so on. */
        const val FP16_DEFAULT = true
    }
}
