package com.mfndeploy.demo

import android.graphics.BitmapFactory
import android.os.Bundle
import android.widget.Button
import android.widget.CheckBox
import android.widget.EditText
import android.widget.RadioGroup
import android.widget.TextView
import androidx.activity.ComponentActivity
import java.util.concurrent.Executors

/**
 * In-app benchmark: detect + align + embed on the bundled photo (assets/models/benchmark.png)
 * with a chosen thread count, core policy and precision. A foreground app is scheduled
 * differently from `adb shell` (mfn-bench), so both numbers are worth having. The result
 * names the model (embedder file and the start of its sha256) and the precision that ran.
 *
 * The fp16 box is the app's fp16 setting (live screen too), on by default: see
 * [Settings.fp16] for why.
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
        val fp16Box = findViewById<CheckBox>(R.id.fp16)
        val output = findViewById<TextView>(R.id.output)
        val run = findViewById<Button>(R.id.run)

        threads.setText(settings.threads.toString())
        fp16Box.isChecked = settings.fp16
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
            val fp16 = fp16Box.isChecked
            settings.threads = nThreads
            settings.powersave = powersave
            settings.fp16 = fp16
            val precision = getString(if (fp16) R.string.precision_fp16 else R.string.precision_fp32)
            run.isEnabled = false
            output.append(getString(R.string.bench_running, nThreads, powersave, nLoops, precision) + "\n")
            worker.execute {
                val text = try {
                    val bitmap = assets.open("models/benchmark.png").use { BitmapFactory.decodeStream(it) }
                    FaceEngine().use { engine ->
                        engine.configure(nThreads, powersave, fp16)
                        engine.loadFromAssets(assets)
                        val r = engine.benchmark(Frames.fromBitmap(bitmap), nLoops)
                        val model = engine.embedder?.let { "${it.basename} (sha256 ${it.sha256.take(12)})" } ?: "?"
                        getString(
                            R.string.bench_result,
                            r.faces, r.loops,
                            r.median.detectMs, r.median.alignMs, r.median.embedMs,
                            r.min.detectMs, r.min.alignMs, r.min.embedMs,
                            engine.ncnnVersion(), model, precision,
                        )
                    }
                } catch (t: Throwable) {
                    // Also a failed System.loadLibrary (an Error): report it, do not crash.
                    getString(R.string.bench_failed, t.message ?: t.javaClass.simpleName)
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
