package com.mfndeploy.demo

import android.Manifest
import android.content.Intent
import android.content.pm.PackageManager
import android.net.Uri
import android.os.Bundle
import android.widget.Button
import android.widget.EditText
import android.widget.TextView
import android.widget.Toast
import androidx.activity.ComponentActivity
import androidx.activity.result.contract.ActivityResultContracts
import androidx.camera.core.CameraSelector
import androidx.camera.core.ImageAnalysis
import androidx.camera.core.Preview
import androidx.camera.lifecycle.ProcessCameraProvider
import androidx.camera.view.PreviewView
import androidx.core.content.ContextCompat
import java.io.File
import java.util.concurrent.ExecutorService
import java.util.concurrent.Executors

/**
 * Live screen: camera preview, detection + verification of the main face on every
 * analysed frame, enrolment under a name, and the per-stage latency overlay.
 *
 * Threads: the engine is made, used and closed on [analysis] only; the gallery is changed
 * on the main thread and read by the analyzer through its immutable snapshot.
 */
class MainActivity : ComponentActivity() {
    private lateinit var previewView: PreviewView
    private lateinit var overlay: OverlayView
    private lateinit var status: TextView
    private lateinit var settings: Settings
    private lateinit var gallery: Gallery
    private val analysis: ExecutorService = Executors.newSingleThreadExecutor()
    // Set and cleared on the analysis thread; null before set-up and after onDestroy.
    @Volatile private var engine: FaceEngine? = null
    private var imageAnalysis: ImageAnalysis? = null
    private var cameraStarted = false
    // Front camera unless the device has none; the overlay mirrors front frames.
    @Volatile private var mirrored = true
    // Why nothing is analysed (no permission, no camera, no models); shown instead of the gallery line.
    private var problem: String? = null

    // The last main-face embedding, what "Enroll" stores.
    @Volatile private var lastEmbedding: FloatArray? = null

    private val askCamera = registerForActivityResult(ActivityResultContracts.RequestPermission()) { granted ->
        if (granted) startCamera() else showCameraDenied()
    }

    override fun onCreate(savedInstanceState: Bundle?) {
        super.onCreate(savedInstanceState)
        setContentView(R.layout.activity_main)
        previewView = findViewById(R.id.preview)
        overlay = findViewById(R.id.overlay)
        status = findViewById(R.id.status)
        settings = Settings(this)
        // The embedder's sha256 tags each gallery row; "" (no assets) matches no row.
        val embedderSha256 = try {
            EmbedderInfo.read(assets).sha256
        } catch (e: Exception) {
            ""
        }
        gallery = Gallery(File(filesDir, "gallery.json"), embedderSha256)

        findViewById<Button>(R.id.enroll).setOnClickListener { enroll(findViewById<EditText>(R.id.name)) }
        findViewById<Button>(R.id.clear).setOnClickListener {
            gallery.clear()
            updateStatus()
        }
        findViewById<Button>(R.id.benchmark).setOnClickListener {
            startActivity(Intent(this, BenchmarkActivity::class.java))
        }

        val threads = settings.threads
        val powersave = settings.powersave
        val fp16 = settings.fp16
        analysis.execute { setUpEngine(threads, powersave, fp16) }
        updateStatus()
        if (gallery.stale > 0) toast(getString(R.string.gallery_stale, gallery.stale))
        if (hasCameraPermission()) startCamera() else askCamera.launch(Manifest.permission.CAMERA)
    }

    override fun onResume() {
        super.onResume()
        // Back from the system settings with the permission granted now.
        if (!cameraStarted && hasCameraPermission()) {
            problem = null
            status.setOnClickListener(null)
            updateStatus()
            startCamera()
        }
        // The benchmark screen may have changed threads, core policy or fp16.
        val threads = settings.threads
        val powersave = settings.powersave
        val fp16 = settings.fp16
        analysis.execute {
            val e = engine ?: return@execute
            if (e.fp16 == fp16) {
                e.configure(threads, powersave)
            } else {
                // fp16 shapes the loaded nets: load them again with the new setting.
                engine = null
                e.close()
                setUpEngine(threads, powersave, fp16)
            }
        }
    }

    override fun onDestroy() {
        super.onDestroy()
        // No frame after this: the analyzer goes first, then the engine, on its own thread.
        imageAnalysis?.clearAnalyzer()
        analysis.execute {
            val e = engine
            engine = null
            e?.close()
        }
        analysis.shutdown()
    }

    // Runs on the analysis thread. Anything thrown (a failed System.loadLibrary is an
    // Error, not an Exception) is shown, and a half-made engine is freed.
    private fun setUpEngine(threads: Int, powersave: Int, fp16: Boolean) {
        var made: FaceEngine? = null
        try {
            made = FaceEngine()
            made.configure(threads, powersave, fp16)
            made.loadFromAssets(assets)
            engine = made
        } catch (t: Throwable) {
            made?.close()
            val why = t.message ?: t.javaClass.simpleName
            runOnUiThread { showProblem(getString(R.string.no_models, why)) }
        }
    }

    private fun hasCameraPermission() =
        ContextCompat.checkSelfPermission(this, Manifest.permission.CAMERA) == PackageManager.PERMISSION_GRANTED

    // Once denied (or denied for good), the system dialog may not come back: offer the
    // app's page in the system settings instead.
    private fun showCameraDenied() {
        showProblem(getString(R.string.no_camera))
        status.setOnClickListener {
            val intent = Intent(android.provider.Settings.ACTION_APPLICATION_DETAILS_SETTINGS)
                .setData(Uri.fromParts("package", packageName, null))
            startActivity(intent)
        }
    }

    private fun startCamera() {
        val future = ProcessCameraProvider.getInstance(this)
        future.addListener({
            try {
                bindCamera(future.get())
            } catch (e: Exception) {
                showProblem(getString(R.string.camera_failed, e.message ?: e.javaClass.simpleName))
            }
        }, ContextCompat.getMainExecutor(this))
    }

    private fun bindCamera(provider: ProcessCameraProvider) {
        val front = CameraSelector.DEFAULT_FRONT_CAMERA
        val back = CameraSelector.DEFAULT_BACK_CAMERA
        // hasCamera throws when the camera list cannot be read: treat it as "no such camera".
        fun has(selector: CameraSelector) = try {
            provider.hasCamera(selector)
        } catch (e: Exception) {
            false
        }
        val selector = when {
            has(front) -> front
            has(back) -> back
            else -> {
                showProblem(getString(R.string.no_camera_device))
                return
            }
        }
        mirrored = selector == front
        if (selector == back) toast(getString(R.string.back_camera))
        val preview = Preview.Builder().build().also { it.setSurfaceProvider(previewView.surfaceProvider) }
        val analyzer = ImageAnalysis.Builder()
            .setBackpressureStrategy(ImageAnalysis.STRATEGY_KEEP_ONLY_LATEST)
            .setOutputImageFormat(ImageAnalysis.OUTPUT_IMAGE_FORMAT_RGBA_8888)
            .build()
        analyzer.setAnalyzer(analysis) { image ->
            // The pixels are copied out, so the camera gets its buffer back before inference.
            val frame = try {
                Frames.fromImage(image)
            } finally {
                image.close()
            }
            analyze(frame)
        }
        provider.unbindAll()
        provider.bindToLifecycle(this, selector, preview, analyzer)
        imageAnalysis = analyzer
        cameraStarted = true
    }

    // Runs on the analysis thread.
    private fun analyze(frame: Frame) {
        val engine = engine ?: return
        val known = gallery.snapshot() // immutable: a "Clear" meanwhile changes the next frame
        val faces = engine.detect(frame)
        val detectMs = engine.lastTimes().detectMs
        // The verification is about the largest face; it alone gets the label and colour.
        val main = faces.indices.maxByOrNull { faces[it].box.width() * faces[it].box.height() } ?: -1
        var label = getString(R.string.no_face)
        var accepted = false
        var times = StageTimes(detectMs, 0.0, 0.0)
        if (main >= 0) {
            val embedding = engine.embed(frame, faces[main])
            val t = engine.lastTimes()
            times = StageTimes(detectMs, t.alignMs, t.embedMs)
            lastEmbedding = embedding.takeIf { it.isNotEmpty() }
            label = if (known.size == 0 || embedding.isEmpty()) {
                getString(R.string.not_enrolled)
            } else {
                val (index, score) = engine.match(embedding, known.embeddings)
                accepted = index >= 0 && score >= settings.threshold
                val who = if (accepted) known.names[index] else getString(R.string.unknown)
                "%s  %.3f".format(who, score)
            }
        } else {
            lastEmbedding = null
        }
        overlay.show(OverlayView.Result(frame.width, frame.height, mirrored, faces, main, label, accepted, times))
    }

    private fun enroll(nameField: EditText) {
        val name = nameField.text.toString().trim()
        val embedding = lastEmbedding
        when {
            name.isEmpty() -> toast(getString(R.string.need_name))
            embedding == null -> toast(getString(R.string.no_face))
            else -> {
                gallery.add(name, embedding)
                toast(getString(R.string.enrolled, name))
                updateStatus()
            }
        }
    }

    private fun showProblem(text: String) {
        problem = text
        updateStatus()
    }

    private fun updateStatus() {
        status.text = problem
            ?: getString(R.string.gallery_status, gallery.size, gallery.names.joinToString(), settings.threshold)
    }

    private fun toast(text: String) = Toast.makeText(this, text, Toast.LENGTH_SHORT).show()
}
