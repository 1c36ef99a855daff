// Runs face_engine on raw RGB pixels and prints detections and embeddings as
// JSON, for tests/test_android_host.py to compare with the Python pipeline.
// Decoding images is the caller's job: the engine takes pixels only.
//
// usage: face_engine_host_test DETECTOR_DIR EMBED_PARAM EMBED_BIN RGB_FILE
//            WIDTH HEIGHT [EMBED_WIDTH EMBED_HEIGHT [THREADS]]
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "face_engine.h"

namespace {

bool read_file(const std::string& path, std::vector<unsigned char>& out) {
    std::ifstream f(path, std::ios::binary);
    if (!f) return false;
    out.assign(std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>());
    return true;
}

bool load(mfn::FaceEngine& engine, mfn::Net which, const std::string& param_path,
          const std::string& bin_path) {
    std::vector<unsigned char> param, bin;
    if (!read_file(param_path, param) || !read_file(bin_path, bin)) {
        std::fprintf(stderr, "cannot read %s or %s\n", param_path.c_str(), bin_path.c_str());
        return false;
    }
    if (!engine.load(which, std::string(param.begin(), param.end()), bin)) {
        std::fprintf(stderr, "ncnn rejected %s\n", param_path.c_str());
        return false;
    }
    return true;
}

}  // namespace

int main(int argc, char** argv) {
    if (argc < 7) {
        std::fprintf(stderr,
                     "usage: %s DETECTOR_DIR EMBED_PARAM EMBED_BIN RGB_FILE WIDTH HEIGHT "
                     "[EMBED_WIDTH EMBED_HEIGHT [THREADS]]\n",
                     argv[0]);
        return 2;
    }
    const std::string det = argv[1];
    const int width = std::atoi(argv[5]), height = std::atoi(argv[6]);
    mfn::EngineOptions options;
    if (argc >= 9) options.embed_width = std::atoi(argv[7]), options.embed_height = std::atoi(argv[8]);
    if (argc >= 10) options.num_threads = std::atoi(argv[9]);

    mfn::FaceEngine engine;
    engine.set_options(options);
    const char* names[3] = {"pnet", "rnet", "onet"};
    for (int i = 0; i < 3; i++) {
        const std::string base = det + "/" + names[i] + ".ncnn.";
        if (!load(engine, static_cast<mfn::Net>(i), base + "param", base + "bin")) return 1;
    }
    if (!load(engine, mfn::Net::kEmbedder, argv[2], argv[3])) return 1;

    std::vector<unsigned char> rgb;
    if (!read_file(argv[4], rgb) || rgb.size() != static_cast<size_t>(width) * height * 3) {
        std::fprintf(stderr, "%s: expected %d x %d x 3 bytes\n", argv[4], width, height);
        return 1;
    }

    const std::vector<mfn::Face> faces = engine.detect(rgb.data(), width, height, 0, mfn::kRGB);
    const double detect_ms = engine.last_times().detect_ms;
    std::printf("{\"ncnn\": \"%s\", \"detect_ms\": %.3f, \"faces\": [", mfn::ncnn_version(), detect_ms);
    for (size_t i = 0; i < faces.size(); i++) {
        const mfn::Face& f = faces[i];
        const std::vector<float> e = engine.embed(rgb.data(), width, height, 0, mfn::kRGB, f.landmarks);
        std::printf("%s\n {\"box\": [%.6f, %.6f, %.6f, %.6f], \"score\": %.7f, \"landmarks\": [",
                    i ? "," : "", f.box[0], f.box[1], f.box[2], f.box[3], f.score);
        for (int k = 0; k < 5; k++)
            std::printf("%s[%.6f, %.6f]", k ? ", " : "", f.landmarks[2 * k], f.landmarks[2 * k + 1]);
        std::printf("], \"align_ms\": %.3f, \"embed_ms\": %.3f, \"embedding\": [",
                    engine.last_times().align_ms, engine.last_times().embed_ms);
        for (size_t k = 0; k < e.size(); k++) std::printf("%s%.9g", k ? ", " : "", e[k]);
        std::printf("]}");
    }
    std::printf("]}\n");
    return 0;
}
