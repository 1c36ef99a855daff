package com.mfndeploy.demo

import android.content.Context
import android.graphics.Canvas
import android.graphics.Color
import android.graphics.Paint
import android.util.AttributeSet
import android.view.View

/**
 * Draws the faces of the last analysed frame over the preview, with the verification
 * result and the per-stage milliseconds. Frame coordinates are mapped like the preview's
 * FILL_CENTER scaling, mirrored for the front camera.
 *
 * Only the verified face ([Result.verified], the largest) gets the label and the
 * green/red colour of the decision; other faces are drawn in grey.
 */
class OverlayView(context: Context, attrs: AttributeSet? = null) : View(context, attrs) {
    class Result(
        val frameWidth: Int,
        val frameHeight: Int,
        val mirrored: Boolean,
        val faces: List<Face>,
        val verified: Int, // index in faces of the face that was verified; -1: none
        val label: String,
        val accepted: Boolean,
        val times: StageTimes?,
    )

    @Volatile private var result: Result? = null
    private val boxPaint = Paint().apply { style = Paint.Style.STROKE; strokeWidth = 5f }
    private val otherPaint = Paint().apply { style = Paint.Style.STROKE; strokeWidth = 3f; color = Color.LTGRAY }
    private val dotPaint = Paint().apply { color = Color.CYAN }
    private val textPaint = Paint().apply { color = Color.WHITE; textSize = 44f; setShadowLayer(4f, 0f, 0f, Color.BLACK) }

    fun show(r: Result) {
        result = r
        postInvalidate()
    }

    override fun onDraw(canvas: Canvas) {
        super.onDraw(canvas)
        val r = result ?: return
        val scale = maxOf(width.toFloat() / r.frameWidth, height.toFloat() / r.frameHeight)
        val dx = (width - r.frameWidth * scale) / 2
        val dy = (height - r.frameHeight * scale) / 2
        fun mapX(x: Float) = if (r.mirrored) width - (x * scale + dx) else x * scale + dx
        fun mapY(y: Float) = y * scale + dy

        boxPaint.color = if (r.accepted) Color.GREEN else Color.RED
        for ((i, f) in r.faces.withIndex()) {
            val left = minOf(mapX(f.box.left), mapX(f.box.right))
            val right = maxOf(mapX(f.box.left), mapX(f.box.right))
            val verified = i == r.verified
            canvas.drawRect(left, mapY(f.box.top), right, mapY(f.box.bottom), if (verified) boxPaint else otherPaint)
            for (k in 0 until 5) canvas.drawCircle(mapX(f.landmarks[2 * k]), mapY(f.landmarks[2 * k + 1]), 6f, dotPaint)
            if (verified) canvas.drawText(r.label, left, mapY(f.box.top) - 12f, textPaint)
        }
        if (r.verified < 0) canvas.drawText(r.label, 24f, 120f, textPaint)
        r.times?.let {
            val line = "detect %.1f ms  align %.1f ms  embed %.1f ms".format(it.detectMs, it.alignMs, it.embedMs)
            canvas.drawText(line, 24f, 64f, textPaint)
        }
    }
}
