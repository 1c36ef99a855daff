// face_engine: MTCNN detection, five-point alignment, MobileFaceNet embedding
// and cosine matching on top of ncnn. Depends on ncnn and the C++ standard
// library only: no Android, JNI or image-library headers, so the same file is
// built for phones (through jni_bridge.cpp) and for host tests.
//
// The cascade reproduces src/mfn_deploy/face/detect.py and align.py step by
// step, so embeddings match the Python ncnn pipeline. The preprocessing of
// every net (input size, channel order, mean, scale, blob names, alignment
// template) is not built in: it is read from the net's contract file
// (InputContract, parse_contract), written from the export's manifest.
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

// What one network takes, read from its contract file (<net>.ncnn.contract in
// the app's assets), which `mfn-deploy android-assets` writes from the export's
// manifest.json: nothing here has a built-in default. The tensor fed to the
// net is CHW float32, channel k = (pixel[channel_order[k]] - mean[k]) * scale[k],
// as the Python pipeline normalises. Format: see parse_contract and README.md.
struct InputContract {
    int width = 0, height = 0;           // network input; 0 x 0: any size (P-Net)
    bool bgr = false;                    // channel order of the tensor: RGB or BGR
    float mean[3] = {0.f, 0.f, 0.f};     // per tensor channel
    float scale[3] = {0.f, 0.f, 0.f};    // per tensor channel, positive
    std::string input_blob, output_blob;  // ncnn blob names
    // Embedder only: where the five landmarks land in the width x height crop
    // (x, y pairs: left eye, right eye, nose tip, left and right mouth corner).
    double landmark_template[10] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0};
};

// Parses the text of net `which`'s contract file: one key=value a line, '#'
// comments and blank lines allowed, every key required exactly once, unknown
// keys refused. Returns false with a one-line reason in *error when the text
// is malformed, incomplete or written for another net; never throws.
bool parse_contract(const std::string& text, Net which, InputContract* out, std::string* error);

// "pnet", "rnet", "onet" or "embedder": the net= value its contract carries.
const char* net_name(Net which);

struct EngineOptions {
    int num_threads = 1;
    // ncnn's CPU affinity policy: 0 all cores, 1 little cores, 2 big cores.
    int powersave = 0;
    // fp16 storage/arithmetic where the CPU has it; off gives fp32 parity
    // with the Python pipeline.
    bool fp16 = false;
    // MTCNN settings, as DetectorConfig in detect.py.
    int min_face = 20;
    double scale_factor = 0.709;  // double, as Python multiplies the scales
    float thresholds[3] = {0.6f, 0.7f, 0.7f};
    float nms[4] = {0.5f, 0.7f, 0.7f, 0.7f};  // per scale, P, R, O
};

class FaceEngine {
public:
    // Options that shape the networks (threads, fp16) apply at load time.
    void set_options(const EngineOptions& options);
    const EngineOptions& options() const { return options_; }

    // param: the text .param file; bin: the .bin weights; contract: the text
    // of the net's contract file (see InputContract). All are copied, so
    // callers may free them. Returns false, with the reason in last_error(),
    // when the contract is malformed or ncnn rejects the model.
    bool load(Net which, const std::string& param, const std::vector<unsigned char>& bin,
              const std::string& contract);
    bool ready() const;
    // The contract `which` was loaded with (all zero when it is not loaded).
    const InputContract& contract(Net which) const { return contracts_[static_cast<int>(which)]; }

    // Why the last load/detect/align/embed call failed; empty after a call
    // that succeeded (finding no face is a success).
    const std::string& last_error() const { return error_; }

    // Interleaved 8-bit pixels, row stride in bytes (0 = packed).
    std::vector<Face> detect(const unsigned char* pixels, int width, int height, int stride,
                             PixelFormat format);

    // Aligns the face with its landmarks and returns the L2-normalised
    // embedding (empty when the landmarks are degenerate or nets are missing).
    std::vector<float> embed(const unsigned char* pixels, int width, int height, int stride,
                             PixelFormat format, const float landmarks[10]);

    // The aligned RGB crop at the embedder contract's size (for debugging and
    // tests); needs the embedder loaded, as its contract gives size and template.
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
    bool fail(const std::string& message);
    bool run(Net which, const ncnn::Mat& in, ncnn::Mat& out);

    EngineOptions options_;
    ncnn::Net nets_[4];
    std::vector<unsigned char> weights_[4];  // ncnn references weights, never copies
    InputContract contracts_[4];
    bool loaded_[4] = {false, false, false, false};
    StageTimes times_;
    std::string error_;
};

// Cosine similarity of two vectors of length n (0 when either is zero).
float cosine(const float* a, const float* b, int n);

// Index of the gallery row (count rows of dim floats) most similar to query,
// and its score; -1 when the gallery is empty.
int best_match(const float* query, const float* gallery, int count, int dim, float* score);

// Least-squares similarity transform (Umeyama, no reflection) mapping the
// five landmarks onto the template (the embedder contract's, x, y pairs).
// Writes the 2x3 forward matrix; false when the landmarks are degenerate.
bool similarity_transform(const float landmarks[10], const double templ[10], double m[6]);

const char* ncnn_version();

}  // namespace mfn
