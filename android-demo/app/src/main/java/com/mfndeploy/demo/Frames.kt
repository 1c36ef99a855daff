package com.mfndeploy.demo

import android.graphics.Bitmap
import android.graphics.Matrix
import androidx.camera.core.ImageProxy
import java.nio.ByteBuffer

/** Camera and bitmap pixels -> upright RGBA [Frame]s for the native core. */
object Frames {
    /** An analysis image (RGBA_8888 output format), rotated upright. */
    fun fromImage(image: ImageProxy): Frame {
        val bitmap = image.toBitmap()
        val rotation = image.imageInfo.rotationDegrees
        val upright = if (rotation == 0) bitmap else {
            val m = Matrix().apply { postRotate(rotation.toFloat()) }
            Bitmap.createBitmap(bitmap, 0, 0, bitmap.width, bitmap.height, m, false)
        }
        return fromBitmap(upright)
    }

    fun fromBitmap(bitmap: Bitmap): Frame {
        val argb = if (bitmap.config == Bitmap.Config.ARGB_8888) bitmap else bitmap.copy(Bitmap.Config.ARGB_8888, false)
        // ARGB_8888 is stored R, G, B, A in memory: the core's RGBA.
        val buffer = ByteBuffer.allocate(argb.byteCount)
        argb.copyPixelsToBuffer(buffer)
        return Frame(buffer.array(), argb.width, argb.height, argb.rowBytes, Frame.RGBA)
    }
}
