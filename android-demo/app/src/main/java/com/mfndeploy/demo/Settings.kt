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

    /** Cosine threshold of the accept decision; calibrate it with `mfn-deploy evaluate`. */
    var threshold: Float
        get() = prefs.getFloat("threshold", 0.4f)
        set(v) = prefs.edit().putFloat("threshold", v).apply()
}
