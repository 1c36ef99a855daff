package com.mfndeploy.demo

import android.graphics.BitmapFactory
import android.os.Bundle
import android.widget.Button
import android.widget.EditText
import android.widget.RadioGroup
import android.widget.TextView
import androidx.activity.ComponentActivity
import java.util.concurrent.Executors

/**
 * In-app benchmark: detect + align + embed on the bundled photo (assets/models/benchmark.png)
 * with a chosen thread count and core policy. A foreground app is scheduled differently from
 * `adb shell` (mfn-bench), so both numbers are worth having.
 */
class BenchmarkActivity : ComponentActivity() {
    private val worker = Executors.newSingleThreadExecutor()

    override fun onCreate(savedInstanceState: Bundle?) {
        super.onCreate(savedInstanceState)
        setContentView(R.layout.activity_benchmark)
        val settings = Settings(this)
        val threads = findViewById<EditText>(R.id.threads)
        val loops = findViewById<EditText>(R.id.loops)
        val cores = findViewById<RadioGroup>(R.id.cores)
        val output = findViewById<TextView>(R.id.output)
        val run = findViewById<Button>(R.id.run)

        threads.setText(settings.threads.toString())
        cores.check(
            when (settings.powersave) {
                FaceEngine.POWERSAVE_LITTLE -> R.id.cores_little
                FaceEngine.POWERSAVE_BIG -> R.id.cores_big
                else -> R.id.cores_all
            }
        )

        run.setOnClickListener {
            val nThreads = threads.text.toString().toIntOrNull()?.coerceIn(1, 16) ?: 1
            val nLoops = loops.text.toString().toIntOrNull()?.coerceIn(1, 1000) ?: 20
            val powersave = when (cores.checkedRadioButtonId) {
                R.id.cores_little -> FaceEngine.POWERSAVE_LITTLE
                R.id.cores_big -> FaceEngine.POWERSAVE_BIG
                else -> FaceEngine.POWERSAVE_ALL
            }
            settings.threads = nThreads
            settings.powersave = powersave
            run.isEnabled = false
            output.append(getString(R.string.bench_running, nThreads, powersave, nLoops) + "\n")
            worker.execute {
                val text = try {
                    val bitmap = assets.open("models/benchmark.png").use { BitmapFactory.decodeStream(it) }
                    FaceEngine().use { engine ->
                        engine.configure(nThreads, powersave)
                        engine.loadFromAssets(assets)
                        val r = engine.benchmark(Frames.fromBitmap(bitmap), nLoops)
                        getString(
                            R.string.bench_result,
                            r.faces, r.loops,
                            r.median.detectMs, r.median.alignMs, r.median.embedMs,
                            r.min.detectMs, r.min.alignMs, r.min.embedMs,
                            engine.ncnnVersion(),
                        )
                    }
                } catch (e: Exception) {
                    getString(R.string.bench_failed, e.message)
                }
                runOnUiThread {
                    output.append(text + "\n")
                    run.isEnabled = true
                }
            }
        }
    }

    override fun onDestroy() {
        super.onDestroy()
        worker.shutdown()
    }
}
