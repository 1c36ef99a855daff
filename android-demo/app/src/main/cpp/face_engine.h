// face_engine: MTCNN detection, five-point alignment, MobileFaceNet embedding
// and cosine matching on top of ncnn. Depends on ncnn and the C++ standard
// library only: no Android, JNI or image-library headers, so the same file is
// built for phones (through jni_bridge.cpp) and for host tests.
//
// The cascade reproduces src/mfn_deploy/face/detect.py and align.py step by
// step, so embeddings match the Python ncnn pipeline.
#pragma once

#include <cstddef>
#include <string>
#include <vector>

#include "net.h"

namespace mfn {

// One detected face, in pixels of the input image. Box is x1, y1, x2, y2
// (x2/y2 exclusive); landmarks are x, y pairs: left eye, right eye, nose tip,
// left and right mouth corner.
struct Face {
    float box[4];
    float score;
    float landmarks[10];
};

// Milliseconds spent in each stage by the last call that ran it.
struct StageTimes {
    double detect_ms = 0;
    double align_ms = 0;
    double embed_ms = 0;
};

enum PixelFormat { kRGB = 0, kRGBA = 1 };

enum class Net { kPNet = 0, kRNet = 1, kONet = 2, kEmbedder = 3 };

struct EngineOptions {
    int num_threads = 1;
    // ncnn's CPU affinity policy: 0 all cores, 1 little cores, 2 big cores.
    int powersave = 0;
    // fp16 storage/arithmetic where the CPU has it; off gives fp32 parity
    // with the Python pipeline.
    bool fp16 = false;
    int embed_width = 112;
    int embed_height = 112;
    // MTCNN settings, as DetectorConfig in detect.py.
    int min_face = 20;
    double scale_factor = 0.709;  // double, as Python multiplies the scales
    float thresholds[3] = {0.6f, 0.7f, 0.7f};
    float nms[4] = {0.5f, 0.7f, 0.7f, 0.7f};  // per scale, P, R, O
    std::string input_blob = "in0";
    std::string output_blob = "out0";
};

class FaceEngine {
public:
    // Options that shape the networks (threads, fp16) apply at load time.
    void set_options(const EngineOptions& options);
    const EngineOptions& options() const { return options_; }

    // param: the text .param file; bin: the .bin weights. Both are copied, so
    // callers may free them. Returns false when ncnn rejects them.
    bool load(Net which, const std::string& param, const std::vector<unsigned char>& bin);
    bool ready() const;

    // Interleaved 8-bit pixels, row stride in bytes (0 = packed).
    std::vector<Face> detect(const unsigned char* pixels, int width, int height, int stride,
                             PixelFormat format);

    // Aligns the face with its landmarks and returns the L2-normalised
    // embedding (empty when the landmarks are degenerate or nets are missing).
    std::vector<float> embed(const unsigned char* pixels, int width, int height, int stride,
                             PixelFormat format, const float landmarks[10]);

    // The aligned embed_width x embed_height RGB crop (for debugging/tests).
    std::vector<unsigned char> align(const unsigned char* pixels, int width, int height, int stride,
                                     PixelFormat format, const float landmarks[10]);

    const StageTimes& last_times() const { return times_; }

    // Runs detect + embed (largest-score face) `loops` times after one warm-up
    // and summarises the per-stage times, for the in-app benchmark screen.
    struct Benchmark {
        int loops = 0;
        int faces = 0;
        StageTimes median, min;
    };
    Benchmark benchmark(const unsigned char* pixels, int width, int height, int stride,
                        PixelFormat format, int loops);

private:
    EngineOptions options_;
    ncnn::Net nets_[4];
    std::vector<unsigned char> weights_[4];  // ncnn references weights, never copies
    bool loaded_[4] = {false, false, false, false};
    StageTimes times_;
};

// Cosine similarity of two vectors of length n (0 when either is zero).
float cosine(const float* a, const float* b, int n);

// Index of the gallery row (count rows of dim floats) most similar to query,
// and its score; -1 when the gallery is empty.
int best_match(const float* query, const float* gallery, int count, int dim, float* score);

// Least-squares similarity transform (Umeyama, no reflection) mapping the
// five landmarks onto the standard template for a width x height crop.
// Writes the 2x3 forward matrix; false when the landmarks are degenerate.
bool similarity_transform(const float landmarks[10], int width, int height, double m[6]);

const char* ncnn_version();

}  // namespace mfn
