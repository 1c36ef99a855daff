package com.mfndeploy.demo

import android.Manifest
import android.content.Intent
import android.content.pm.PackageManager
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
 */
class MainActivity : ComponentActivity() {
    private lateinit var previewView: PreviewView
    private lateinit var overlay: OverlayView
    private lateinit var status: TextView
    private lateinit var settings: Settings
    private lateinit var gallery: Gallery
    // The engine is used on the analysis thread only.
    private val analysis: ExecutorService = Executors.newSingleThreadExecutor()
    private var engine: FaceEngine? = null
    private val frontCamera = true

    // The last main-face embedding, what "Enroll" stores.
    @Volatile private var lastEmbedding: FloatArray? = null

    private val askCamera = registerForActivityResult(ActivityResultContracts.RequestPermission()) { granted ->
        if (granted) startCamera() else status.text = getString(R.string.no_camera)
    }

    override fun onCreate(savedInstanceState: Bundle?) {
        super.onCreate(savedInstanceState)
        setContentView(R.layout.activity_main)
        previewView = findViewById(R.id.preview)
        overlay = findViewById(R.id.overlay)
        status = findViewById(R.id.status)
        settings = Settings(this)
        gallery = Gallery(File(filesDir, "gallery.json"))

        findViewById<Button>(R.id.enroll).setOnClickListener { enroll(findViewById<EditText>(R.id.name)) }
        findViewById<Button>(R.id.clear).setOnClickListener {
            gallery.clear()
            updateStatus()
        }
        findViewById<Button>(R.id.benchmark).setOnClickListener {
            startActivity(Intent(this, BenchmarkActivity::class.java))
        }

        analysis.execute {
            try {
                engine = FaceEngine().apply {
                    try {
                        configure(settings.threads, settings.powersave)
                        loadFromAssets(assets)
                    } catch (e: Exception) {
                        close() // a refused model or contract: free the native engine
                        throw e
                    }
                }
            } catch (e: Exception) {
                runOnUiThread { status.text = getString(R.string.no_models, e.message) }
            }
        }
        updateStatus()
        if (ContextCompat.checkSelfPermission(this, Manifest.permission.CAMERA) == PackageManager.PERMISSION_GRANTED) {
            startCamera()
        } else {
            askCamera.launch(Manifest.permission.CAMERA)
        }
    }

    override fun onResume() {
        super.onResume()
        // The benchmark screen may have changed threads or core policy.
        analysis.execute { engine?.configure(settings.threads, settings.powersave) }
    }

    override fun onDestroy() {
        super.onDestroy()
        analysis.execute { engine?.close() }
        analysis.shutdown()
    }

    private fun startCamera() {
        val future = ProcessCameraProvider.getInstance(this)
        future.addListener({
            val provider = future.get()
            val preview = Preview.Builder().build().also { it.setSurfaceProvider(previewView.surfaceProvider) }
            val imageAnalysis = ImageAnalysis.Builder()
                .setBackpressureStrategy(ImageAnalysis.STRATEGY_KEEP_ONLY_LATEST)
                .setOutputImageFormat(ImageAnalysis.OUTPUT_IMAGE_FORMAT_RGBA_8888)
                .build()
            imageAnalysis.setAnalyzer(analysis) { image ->
                image.use { analyze(Frames.fromImage(it)) }
            }
            val selector = if (frontCamera) CameraSelector.DEFAULT_FRONT_CAMERA else CameraSelector.DEFAULT_BACK_CAMERA
            provider.unbindAll()
            provider.bindToLifecycle(this, selector, preview, imageAnalysis)
        }, ContextCompat.getMainExecutor(this))
    }

    // Runs on the analysis thread.
    private fun analyze(frame: Frame) {
        val engine = engine ?: return
        val faces = engine.detect(frame)
        val detectMs = engine.lastTimes().detectMs
        // The verification photo is about the largest face.
        val main = faces.maxByOrNull { it.box.width() * it.box.height() }
        var label = getString(R.string.no_face)
        var accepted = false
        var times = StageTimes(detectMs, 0.0, 0.0)
        if (main != null) {
            val embedding = engine.embed(frame, main)
            val t = engine.lastTimes()
            times = StageTimes(detectMs, t.alignMs, t.embedMs)
            lastEmbedding = embedding.takeIf { it.isNotEmpty() }
            label = if (gallery.size == 0 || embedding.isEmpty()) {
                getString(R.string.not_enrolled)
            } else {
                val (index, score) = engine.match(embedding, gallery.embeddings())
                accepted = score >= settings.threshold
                val who = if (accepted) gallery.nameAt(index) else getString(R.string.unknown)
                "%s  %.3f".format(who, score)
            }
        } else {
            lastEmbedding = null
        }
        overlay.show(OverlayView.Result(frame.width, frame.height, frontCamera, faces, label, accepted, times))
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

    private fun updateStatus() {
        status.text = getString(R.string.gallery_status, gallery.size, gallery.names.joinToString(), settings.threshold)
    }

    private fun toast(text: String) = Toast.makeText(this, text, Toast.LENGTH_SHORT).show()
}
