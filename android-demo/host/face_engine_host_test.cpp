// Runs face_engine on raw RGB pixels and prints detections and embeddings as
// JSON, for tests/test_android_host.py to compare with the Python pipeline.
// Decoding images is the caller's job: the engine takes pixels only.
//
// Loads the nets from an assets folder written by `mfn-deploy android-assets`
// (app/src/main/assets/models/) exactly as FaceEngine.kt does: for each net
// BASE.param, BASE.bin and BASE.contract, BASE being detector/pnet.ncnn,
// detector/rnet.ncnn, detector/onet.ncnn and embedder/EMBED_BASENAME.
//
// usage: face_engine_host_test ASSETS_DIR EMBED_BASENAME RGB_FILE WIDTH HEIGHT [THREADS]
// Exit status 1 with the engine's one-line reason on stderr when a file is
// missing or the engine refuses a net (a malformed contract, say).
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

bool load(mfn::FaceEngine& engine, mfn::Net which, const std::string& base) {
    std::vector<unsigned char> param, bin, contract;
    const char* exts[3] = {".param", ".bin", ".contract"};
    std::vector<unsigned char>* data[3] = {&param, &bin, &contract};
    for (int k = 0; k < 3; k++) {
        if (!read_file(base + exts[k], *data[k])) {
            std::fprintf(stderr, "%s%s: cannot read\n", base.c_str(), exts[k]);
            return false;
        }
    }
    if (!engine.load(which, std::string(param.begin(), param.end()), bin,
                     std::string(contract.begin(), contract.end()))) {
        std::fprintf(stderr, "%s: %s\n", base.c_str(), engine.last_error().c_str());
        return false;
    }
    return true;
}

// The engine's messages are printable ASCII; escape what JSON needs.
std::string json_escape(const std::string& s) {
    std::string out;
    for (char ch : s) {
        if (ch == '"' || ch == '\\') out += '\\';
        out += ch;
    }
    return out;
}

}  // namespace

int main(int argc, char** argv) {
    if (argc < 6) {
        std::fprintf(stderr, "usage: %s ASSETS_DIR EMBED_BASENAME RGB_FILE WIDTH HEIGHT [THREADS]\n",
                     argv[0]);
        return 2;
    }
    const std::string assets = argv[1];
    const int width = std::atoi(argv[4]), height = std::atoi(argv[5]);
    mfn::EngineOptions options;
    if (argc >= 7) options.num_threads = std::atoi(argv[6]);

    mfn::FaceEngine engine;
    engine.set_options(options);
    const char* names[3] = {"pnet", "rnet", "onet"};
    for (int i = 0; i < 3; i++)
        if (!load(engine, static_cast<mfn::Net>(i), assets + "/detector/" + names[i] + ".ncnn")) return 1;
    if (!load(engine, mfn::Net::kEmbedder, assets + "/embedder/" + argv[2])) return 1;

    std::vector<unsigned char> rgb;
    if (!read_file(argv[3], rgb) || rgb.size() != static_cast<size_t>(width) * height * 3) {
        std::fprintf(stderr, "%s: expected %d x %d x 3 bytes\n", argv[3], width, height);
        return 1;
    }

    const std::vector<mfn::Face> faces = engine.detect(rgb.data(), width, height, 0, mfn::kRGB);
    if (!engine.last_error().empty()) {
        std::fprintf(stderr, "detect: %s\n", engine.last_error().c_str());
        return 1;
    }
    const double detect_ms = engine.last_times().detect_ms;
    const mfn::InputContract& c = engine.contract(mfn::Net::kEmbedder);
    std::printf("{\"ncnn\": \"%s\", \"detect_ms\": %.3f, \"embedder\": {\"width\": %d, \"height\": %d, "
                "\"channel_order\": \"%s\", \"mean\": [%.9g, %.9g, %.9g], \"scale\": [%.9g, %.9g, %.9g]}, "
                "\"faces\": [",
                mfn::ncnn_version(), detect_ms, c.width, c.height, c.bgr ? "BGR" : "RGB", c.mean[0],
                c.mean[1], c.mean[2], c.scale[0], c.scale[1], c.scale[2]);
    for (size_t i = 0; i < faces.size(); i++) {
        const mfn::Face& f = faces[i];
        const std::vector<float> e = engine.embed(rgb.data(), width, height, 0, mfn::kRGB, f.landmarks);
        std::printf("%s\n {\"box\": [%.6f, %.6f, %.6f, %.6f], \"score\": %.7f, \"landmarks\": [",
                    i ? "," : "", f.box[0], f.box[1], f.box[2], f.box[3], f.score);
        for (int k = 0; k < 5; k++)
            std::printf("%s[%.9g, %.9g]", k ? ", " : "", f.landmarks[2 * k], f.landmarks[2 * k + 1]);
        std::printf("], \"align_ms\": %.3f, \"embed_ms\": %.3f, \"error\": \"%s\", \"embedding\": [",
                    engine.last_times().align_ms, engine.last_times().embed_ms, json_escape(engine.last_error()).c_str());
        for (size_t k = 0; k < e.size(); k++) std::printf("%s%.9g", k ? ", " : "", e[k]);
        std::printf("]}");
    }
    std::printf("]}\n");
    return 0;
}
