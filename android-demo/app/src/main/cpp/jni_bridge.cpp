// JNI glue between com.mfndeploy.demo.FaceEngine (Kotlin) and face_engine.
// Only marshals arrays; every decision lives in face_engine.cpp or in Kotlin.
// Uses <jni.h> alone, so the host JDK compiles it too (android-demo/host).
//
// Keep in sync with FaceEngine.kt and host/java/com/mfndeploy/demo/FaceEngine.java;
// tests/test_android_host.py checks the three agree.
#include <jni.h>

#include <string>
#include <vector>

#include "face_engine.h"

namespace {

const int kFaceFloats = 15;  // box(4), score, landmarks(10)

// Handle 0 is a closed (or never made) engine: every method then does nothing and
// returns nothing, so a late call from Kotlin cannot reach freed memory.
mfn::FaceEngine* engine(jlong handle) { return reinterpret_cast<mfn::FaceEngine*>(handle); }

std::vector<unsigned char> bytes(JNIEnv* env, jbyteArray array) {
    std::vector<unsigned char> out(array ? env->GetArrayLength(array) : 0);
    if (!out.empty()) env->GetByteArrayRegion(array, 0, out.size(), reinterpret_cast<jbyte*>(out.data()));
    return out;
}

std::vector<float> floats(JNIEnv* env, jfloatArray array) {
    std::vector<float> out(array ? env->GetArrayLength(array) : 0);
    if (!out.empty()) env->GetFloatArrayRegion(array, 0, out.size(), out.data());
    return out;
}

jfloatArray to_java(JNIEnv* env, const std::vector<float>& v) {
    jfloatArray out = env->NewFloatArray(v.size());
    if (out && !v.empty()) env->SetFloatArrayRegion(out, 0, v.size(), v.data());
    return out;
}

jdoubleArray to_java(JNIEnv* env, const std::vector<double>& v) {
    jdoubleArray out = env->NewDoubleArray(v.size());
    if (out && !v.empty()) env->SetDoubleArrayRegion(out, 0, v.size(), v.data());
    return out;
}

// Pins the pixel array only for the duration of one call; camera frames are
// large, so no copy.
struct Pixels {
    JNIEnv* env;
    jbyteArray array;
    jbyte* data;
    jsize size;
    Pixels(JNIEnv* e, jbyteArray a)
        : env(e), array(a), data(a ? e->GetByteArrayElements(a, nullptr) : nullptr),
          size(a ? e->GetArrayLength(a) : 0) {}
    ~Pixels() {
        if (data) env->ReleaseByteArrayElements(array, data, JNI_ABORT);
    }
    // Rejects frames whose buffer is shorter than width/height/stride claim.
    bool fits(jint width, jint height, jint stride, jint format) const {
        const long bpp = format == mfn::kRGBA ? 4 : 3;
        const long row = stride > 0 ? stride : width * bpp;
        return data && width > 0 && height > 0 && row >= width * bpp &&
               static_cast<long>(size) >= row * (height - 1) + width * bpp;
    }
    const unsigned char* get() const { return reinterpret_cast<const unsigned char*>(data); }
};

mfn::PixelFormat pixel_format(jint format) { return format == 1 ? mfn::kRGBA : mfn::kRGB; }

}  // namespace

#define MFN_JNI(ret, name) extern "C" JNIEXPORT ret JNICALL Java_com_mfndeploy_demo_FaceEngine_##name

MFN_JNI(jlong, nativeCreate)(JNIEnv*, jobject) {
    return reinterpret_cast<jlong>(new mfn::FaceEngine());
}

MFN_JNI(void, nativeDestroy)(JNIEnv*, jobject, jlong handle) { delete engine(handle); }

MFN_JNI(void, nativeSetOptions)(JNIEnv*, jobject, jlong handle, jint num_threads, jint powersave,
                                jboolean fp16) {
    if (!engine(handle)) return;
    mfn::EngineOptions o = engine(handle)->options();
    o.num_threads = num_threads > 0 ? num_threads : 1;
    o.powersave = powersave;
    o.fp16 = fp16 == JNI_TRUE;
    engine(handle)->set_options(o);
}

// contract: the bytes of the net's .contract file (its input size, channel
// order, mean, scale and blob names); false with nativeLastError's reason when
// it or the model is refused.
MFN_JNI(jboolean, nativeLoadNet)(JNIEnv* env, jobject, jlong handle, jint which, jbyteArray param,
                                 jbyteArray bin, jbyteArray contract) {
    if (which < 0 || which > 3 || !engine(handle)) return JNI_FALSE;
    const std::vector<unsigned char> text = bytes(env, param), terms = bytes(env, contract);
    return engine(handle)->load(static_cast<mfn::Net>(which), std::string(text.begin(), text.end()),
                                bytes(env, bin), std::string(terms.begin(), terms.end()))
               ? JNI_TRUE
               : JNI_FALSE;
}

// Why the last nativeLoadNet/nativeDetect/nativeEmbed failed; "" when it did not.
MFN_JNI(jstring, nativeLastError)(JNIEnv* env, jobject, jlong handle) {
    // The core quotes file contents as printable ASCII already; keep it so, as
    // NewStringUTF aborts under CheckJNI on malformed modified UTF-8.
    if (!engine(handle)) return env->NewStringUTF("the face engine is closed");
    std::string message = engine(handle)->last_error();
    for (char& ch : message)
        if (ch < ' ' || ch > '~') ch = '?';
    return env->NewStringUTF(message.c_str());
}

MFN_JNI(jfloatArray, nativeDetect)(JNIEnv* env, jobject, jlong handle, jbyteArray pixels, jint width,
                                   jint height, jint stride, jint format) {
    Pixels px(env, pixels);
    std::vector<float> out;
    if (engine(handle) && px.fits(width, height, stride, format)) {
        for (const mfn::Face& f : engine(handle)->detect(px.get(), width, height, stride, pixel_format(format))) {
            out.insert(out.end(), f.box, f.box + 4);
            out.push_back(f.score);
            out.insert(out.end(), f.landmarks, f.landmarks + 10);
        }
    }
    static_assert(kFaceFloats == 15, "FaceEngine.kt decodes 15 floats per face");
    return to_java(env, out);
}

MFN_JNI(jfloatArray, nativeEmbed)(JNIEnv* env, jobject, jlong handle, jbyteArray pixels, jint width,
                                  jint height, jint stride, jint format, jfloatArray landmarks) {
    const std::vector<float> marks = floats(env, landmarks);
    Pixels px(env, pixels);
    if (!engine(handle) || marks.size() != 10 || !px.fits(width, height, stride, format))
        return to_java(env, std::vector<float>());
    return to_java(env, engine(handle)->embed(px.get(), width, height, stride, pixel_format(format), marks.data()));
}

MFN_JNI(jfloatArray, nativeMatch)(JNIEnv* env, jobject, jfloatArray query, jfloatArray gallery) {
    const std::vector<float> q = floats(env, query), g = floats(env, gallery);
    float score = 0;
    const int dim = static_cast<int>(q.size());
    const int best = dim ? mfn::best_match(q.data(), g.data(), static_cast<int>(g.size()) / dim, dim, &score) : -1;
    return to_java(env, std::vector<float>{static_cast<float>(best), score});
}

MFN_JNI(jdoubleArray, nativeLastTimes)(JNIEnv* env, jobject, jlong handle) {
    if (!engine(handle)) return to_java(env, std::vector<double>{0, 0, 0});
    const mfn::StageTimes& t = engine(handle)->last_times();
    return to_java(env, std::vector<double>{t.detect_ms, t.align_ms, t.embed_ms});
}

MFN_JNI(jdoubleArray, nativeBenchmark)(JNIEnv* env, jobject, jlong handle, jbyteArray pixels, jint width,
                                       jint height, jint stride, jint format, jint loops) {
    Pixels px(env, pixels);
    if (!engine(handle) || !px.fits(width, height, stride, format)) return to_java(env, std::vector<double>());
    const mfn::FaceEngine::Benchmark b =
        engine(handle)->benchmark(px.get(), width, height, stride, pixel_format(format), loops);
    return to_java(env, std::vector<double>{double(b.loops), double(b.faces), b.median.detect_ms,
                                            b.median.align_ms, b.median.embed_ms, b.min.detect_ms,
                                            b.min.align_ms, b.min.embed_ms});
}

MFN_JNI(jstring, nativeVersion)(JNIEnv* env, jobject) { return env->NewStringUTF(mfn::ncnn_version()); }
