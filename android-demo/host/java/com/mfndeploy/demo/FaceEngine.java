package com.mfndeploy.demo;

/**
 * Host stand-in for the app's Kotlin FaceEngine (app/src/main/java/com/mfndeploy/demo/FaceEngine.kt):
 * the same package, class and native methods, so the JNI symbols of jni_bridge.cpp resolve for both.
 * tests/test_android_host.py checks that the two declare the same natives with the same types.
 */
public class FaceEngine {
    public native long nativeCreate();

    public native void nativeDestroy(long handle);

    public native void nativeSetOptions(long handle, int numThreads, int powersave, boolean fp16);

    public native boolean nativeLoadNet(long handle, int which, byte[] param, byte[] bin, byte[] contract);

    public native String nativeLastError(long handle);

    public native float[] nativeDetect(
            long handle, byte[] pixels, int width, int height, int stride, int format);

    public native float[] nativeEmbed(
            long handle, byte[] pixels, int width, int height, int stride, int format, float[] landmarks);

    public native float[] nativeMatch(float[] query, float[] gallery);

    public native double[] nativeLastTimes(long handle);

    public native double[] nativeBenchmark(
            long handle, byte[] pixels, int width, int height, int stride, int format, int loops);

    public native String nativeVersion();
}
