package com.mfndeploy.demo;

import java.nio.file.Files;
import java.nio.file.Paths;
import java.util.Arrays;
import java.util.Locale;

/**
 * Calls libface_engine_jni.so through FaceEngine's native methods, the way the app does, and prints
 * the first face and its embedding as JSON for tests/test_android_host.py to compare.
 *
 * <p>The nets come from an assets folder written by {@code mfn-deploy android-assets}, read as
 * FaceEngine.kt's loadFromAssets does: BASE.param, BASE.bin and BASE.contract per net.
 *
 * <p>usage: java -cp CLASSES com.mfndeploy.demo.FaceEngineTest LIB ASSETS_DIR EMBED_BASENAME
 * RGB_FILE WIDTH HEIGHT
 */
public final class FaceEngineTest {
    static final int RGB = 0, RGBA = 1;

    static void check(boolean ok, String what) {
        if (!ok) throw new AssertionError(what);
    }

    static byte[] read(String path) throws Exception {
        return Files.readAllBytes(Paths.get(path));
    }

    static String[] bases(String assets, String embedder) {
        return new String[] {
            assets + "/detector/pnet.ncnn",
            assets + "/detector/rnet.ncnn",
            assets + "/detector/onet.ncnn",
            assets + "/embedder/" + embedder,
        };
    }

    static boolean load(FaceEngine e, long handle, int which, String base, byte[] contract)
            throws Exception {
        return e.nativeLoadNet(handle, which, read(base + ".param"), read(base + ".bin"), contract);
    }

    public static void main(String[] args) throws Exception {
        System.load(Paths.get(args[0]).toAbsolutePath().toString());
        String[] bases = bases(args[1], args[2]);
        byte[] rgb = read(args[3]);
        int w = Integer.parseInt(args[4]), h = Integer.parseInt(args[5]);
        check(rgb.length == w * h * 3, "raw RGB size");

        FaceEngine e = new FaceEngine();
        long handle = e.nativeCreate();
        check(handle != 0, "nativeCreate");
        e.nativeSetOptions(handle, 2, 0, false);
        byte[] pnetContract = read(bases[0] + ".contract");
        check(!e.nativeLoadNet(handle, 0, "not a param".getBytes(), new byte[8], pnetContract), "garbage rejected");
        check(e.nativeLastError(handle).startsWith("pnet: ncnn rejected"), e.nativeLastError(handle));
        // Refused contracts come back as a reason, never a crash: garbage, another net's file, no file.
        // Not UTF-8: the message must still cross JNI (NewStringUTF) intact.
        byte[] junk = {'#', '\n', (byte) 0xff, 'm', (byte) 0xc3, '=', '1', '\n'};
        check(!load(e, handle, 3, bases[3], junk), "junk contract refused");
        check(e.nativeLastError(handle).equals("embedder contract line 2: unknown key '?m?' for embedder"),
                e.nativeLastError(handle));
        check(!load(e, handle, 1, bases[1], pnetContract), "pnet contract for rnet refused");
        check(e.nativeLastError(handle).contains("net must be rnet"), e.nativeLastError(handle));
        check(!load(e, handle, 3, bases[3], new byte[0]), "empty contract refused");
        check(e.nativeLastError(handle).equals("embedder contract: missing key 'format'"), e.nativeLastError(handle));
        check(!load(e, handle, 3, bases[3], null), "no contract refused");
        check(e.nativeEmbed(handle, rgb, w, h, 0, RGB, new float[10]).length == 0, "embed without embedder");
        check(e.nativeLastError(handle).startsWith("align: the embedder must be loaded"), e.nativeLastError(handle));
        check(e.nativeDetect(handle, rgb, w, h, 0, RGB).length == 0, "detect without nets");
        check(e.nativeLastError(handle).startsWith("detect: pnet, rnet and onet"), e.nativeLastError(handle));

        String[] nets = {"pnet", "rnet", "onet", "embedder"};
        for (int i = 0; i < 4; i++) {
            check(load(e, handle, i, bases[i], read(bases[i] + ".contract")), nets[i] + ": " + e.nativeLastError(handle));
            check(e.nativeLastError(handle).isEmpty(), "error cleared");
        }
        check(e.nativeVersion().equals("1.0.20261020"), "ncnn version " + e.nativeVersion());

        float[] faces = e.nativeDetect(handle, rgb, w, h, 0, RGB);
        check(faces.length >= 15 && faces.length % 15 == 0, "faces: " + faces.length);

        // The camera path: RGBA rows padded to a wider stride must give the same faces.
        int stride = w * 4 + 16;
        byte[] rgba = new byte[stride * h];
        for (int y = 0; y < h; y++)
            for (int x = 0; x < w; x++) {
                for (int c = 0; c < 3; c++) rgba[y * stride + x * 4 + c] = rgb[(y * w + x) * 3 + c];
                rgba[y * stride + x * 4 + 3] = (byte) 255;
            }
        check(Arrays.equals(faces, e.nativeDetect(handle, rgba, w, h, stride, RGBA)), "RGBA + stride");
        check(e.nativeDetect(handle, new byte[10], w, h, 0, RGB).length == 0, "short buffer refused");

        float[] marks = Arrays.copyOfRange(faces, 5, 15);
        float[] emb = e.nativeEmbed(handle, rgb, w, h, 0, RGB, marks);
        double norm = 0;
        for (float v : emb) norm += v * v;
        check(emb.length > 0 && Math.abs(Math.sqrt(norm) - 1) < 1e-4, "L2-normalised embedding");
        check(e.nativeEmbed(handle, rgb, w, h, 0, RGB, new float[3]).length == 0, "bad landmarks");
        double[] times = e.nativeLastTimes(handle);
        check(times.length == 3 && times[0] > 0 && times[1] >= 0 && times[2] > 0, "stage times");

        float[] gallery = new float[emb.length * 2];
        for (int i = 0; i < emb.length; i++) gallery[i] = (i % 2 == 0) ? 1 : -1;
        System.arraycopy(emb, 0, gallery, emb.length, emb.length);
        float[] match = e.nativeMatch(emb, gallery);
        check(match[0] == 1 && Math.abs(match[1] - 1) < 1e-5, "match " + Arrays.toString(match));
        check(e.nativeMatch(emb, new float[0])[0] == -1, "empty gallery");

        double[] bench = e.nativeBenchmark(handle, rgb, w, h, 0, RGB, 2);
        check(bench.length == 8 && bench[0] == 2 && bench[1] == faces.length / 15, "benchmark");
        e.nativeDestroy(handle);

        // A closed engine: FaceEngine.kt's close() leaves handle 0, and a late frame may still
        // call in. Every method must then return nothing, never touch memory.
        final long closed = 0;
        e.nativeSetOptions(closed, 2, 0, false);
        check(!load(e, closed, 0, bases[0], read(bases[0] + ".contract")), "load on a closed engine");
        check(e.nativeLastError(closed).equals("the face engine is closed"), e.nativeLastError(closed));
        check(e.nativeDetect(closed, rgb, w, h, 0, RGB).length == 0, "detect on a closed engine");
        check(e.nativeEmbed(closed, rgb, w, h, 0, RGB, marks).length == 0, "embed on a closed engine");
        check(Arrays.equals(e.nativeLastTimes(closed), new double[3]), "times of a closed engine");
        check(e.nativeBenchmark(closed, rgb, w, h, 0, RGB, 1).length == 0, "benchmark on a closed engine");
        e.nativeDestroy(closed);

        StringBuilder out = new StringBuilder("{\"faces\": " + faces.length / 15 + ", \"box\": [");
        for (int i = 0; i < 4; i++) out.append(i > 0 ? ", " : "").append(faces[i]);
        out.append("], \"landmarks\": [");
        for (int i = 0; i < 10; i++) out.append(i > 0 ? ", " : "").append(marks[i]);
        out.append("], \"embedding\": [");
        for (int i = 0; i < emb.length; i++) out.append(i > 0 ? ", " : "").append(emb[i]);
        out.append(String.format(Locale.ROOT, "], \"benchmark_ms\": [%.3f, %.3f, %.3f]}", bench[2], bench[3], bench[4]));
        System.out.println(out);
    }
}
