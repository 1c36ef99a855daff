// See face_engine.h. Each step mirrors a function of src/mfn_deploy/face/
// detect.py or align.py; the Python name is given where it helps to compare.
// Arithmetic types follow numpy's (float32 boxes, float64 scales) so that
// threshold and NMS decisions fall the same way as in Python.
#include "face_engine.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <locale>
#include <numeric>
#include <sstream>

#include "benchmark.h"
#include "cpu.h"
#include "mat.h"
#include "platform.h"

namespace mfn {
namespace {

// P-Net's architecture (12 x 12 receptive field, stride 2), not preprocessing:
// every input size, normalisation and blob name comes from a contract file.
const int kPNetCell = 12, kPNetStride = 2;

// --- the contract file --------------------------------------------------------

const char kContractFormat[] = "mfn-deploy/input-contract-v1";
const size_t kMaxContractBytes = 64 * 1024;
const int kMaxSide = 4096;

std::string trim(const std::string& s) {
    const char* ws = " \t\r";
    const size_t b = s.find_first_not_of(ws);
    if (b == std::string::npos) return "";
    return s.substr(b, s.find_last_not_of(ws) - b + 1);
}

// A finite decimal number and nothing else, whatever the process locale.
bool parse_number(const std::string& text, double* out) {
    const std::string t = trim(text);
    if (t.empty()) return false;
    std::istringstream in(t);
    in.imbue(std::locale::classic());
    double v = 0;
    in >> v;
    if (in.fail() || !std::isfinite(v)) return false;
    in.peek();  // sets eof when everything was consumed
    if (!in.eof()) return false;
    *out = v;
    return true;
}

// Comma-separated numbers; exactly `n` of them, or one broadcast when
// `broadcast` (mean/scale may be a scalar).
bool parse_numbers(const std::string& text, int n, bool broadcast, double* out) {
    std::vector<double> v;
    std::string rest = text;
    for (;;) {
        const size_t comma = rest.find(',');
        double x;
        if (!parse_number(rest.substr(0, comma), &x)) return false;
        v.push_back(x);
        if (comma == std::string::npos) break;
        rest = rest.substr(comma + 1);
    }
    if (broadcast && v.size() == 1) v.assign(n, v[0]);
    if (static_cast<int>(v.size()) != n) return false;
    std::copy(v.begin(), v.end(), out);
    return true;
}

// A side length in pixels (1..kMaxSide), or "any" (0) where allowed.
bool parse_side(const std::string& text, bool any_ok, int* out) {
    if (any_ok && text == "any") return *out = 0, true;
    if (text.empty() || text.size() > 4 || text.find_first_not_of("0123456789") != std::string::npos)
        return false;
    const int v = std::stoi(text);
    if (v < 1 || v > kMaxSide) return false;
    *out = v;
    return true;
}

// A piece of the file for an error message: at most 60 bytes, printable ASCII
// only (messages cross JNI as modified UTF-8), quoted.
std::string quote(const std::string& s) {
    std::string q = "'";
    for (size_t i = 0; i < s.size() && i < 60; i++) q += (s[i] >= ' ' && s[i] < 0x7f) ? s[i] : '?';
    return q + (s.size() > 60 ? "...'" : "'");
}

// As android_assets.py writes them: 1..255 printable ASCII bytes, no spaces.
bool blob_name_ok(const std::string& name) {
    if (name.empty() || name.size() > 255) return false;
    for (unsigned char ch : name)
        if (ch <= ' ' || ch >= 0x7f) return false;
    return true;
}

// The network input: CHW float32, channel k = (pixel[order[k]] - mean[k]) *
// scale[k], computed in float in this order as numpy does. Pixels are
// interleaved RGB (uint8 or float); the contract alone decides the rest.
template <typename T>
ncnn::Mat to_input(const T* rgb, int w, int h, const InputContract& c) {
    ncnn::Mat m(w, h, 3);
    for (int k = 0; k < 3; k++) {
        const int src = c.bgr ? 2 - k : k;
        const float mean = c.mean[k], scale = c.scale[k];
        float* out = m.channel(k);
        for (int i = 0; i < w * h; i++) out[i] = (static_cast<float>(rgb[i * 3 + src]) - mean) * scale;
    }
    return m;
}

// An interleaved RGB float image, the working format of the cascade: Python
// converts to float32 once, before any resizing.
struct Image {
    int w = 0, h = 0;
    std::vector<float> px;  // h * w * 3
    float* at(int y, int x) { return &px[(static_cast<size_t>(y) * w + x) * 3]; }
    const float* at(int y, int x) const { return &px[(static_cast<size_t>(y) * w + x) * 3]; }
};

struct Box {
    float x1, y1, x2, y2, score;
    float reg[4];
};

// Packed 8-bit RGB from RGB or RGBA input with any row stride.
std::vector<unsigned char> to_rgb8(const unsigned char* pixels, int w, int h, int stride,
                                   PixelFormat format) {
    const int bpp = format == kRGBA ? 4 : 3;
    if (stride <= 0) stride = w * bpp;
    std::vector<unsigned char> out(static_cast<size_t>(w) * h * 3);
    for (int y = 0; y < h; y++) {
        const unsigned char* row = pixels + static_cast<size_t>(y) * stride;
        unsigned char* dst = &out[static_cast<size_t>(y) * w * 3];
        for (int x = 0; x < w; x++)
            for (int c = 0; c < 3; c++) dst[x * 3 + c] = row[x * bpp + c];
    }
    return out;
}

// --- cv2.resize(..., INTER_AREA) for float images ---------------------------
// MTCNN's reference uses INTER_AREA; bilinear would move P-Net's scores across
// the thresholds, so the two cases OpenCV distinguishes are reproduced:
// shrinking on both axes averages source pixels weighted by covered area, any
// other case interpolates linearly with OpenCV's "area" coefficients.

struct Tap {
    int dst, src;
    float w;
};

std::vector<Tap> area_taps(int ssize, int dsize, double scale) {
    std::vector<Tap> taps;
    for (int d = 0; d < dsize; d++) {
        const double f1 = d * scale, f2 = f1 + scale;
        const double cell = std::min(scale, ssize - f1);
        int s2 = std::min(static_cast<int>(std::floor(f2)), ssize - 1);
        int s1 = std::min(static_cast<int>(std::ceil(f1)), s2);
        if (s1 - f1 > 1e-3) taps.push_back({d, s1 - 1, static_cast<float>((s1 - f1) / cell)});
        for (int s = s1; s < s2; s++) taps.push_back({d, s, static_cast<float>(1.0 / cell)});
        if (f2 - s2 > 1e-3)
            taps.push_back({d, s2, static_cast<float>(std::min(std::min(f2 - s2, 1.0), cell) / cell)});
    }
    return taps;
}

std::vector<Tap> linear_taps(int ssize, int dsize, double scale) {
    std::vector<Tap> taps;
    for (int d = 0; d < dsize; d++) {
        int s = static_cast<int>(std::floor(d * scale));
        float f = static_cast<float>((d + 1) - (s + 1) * (static_cast<double>(dsize) / ssize));
        f = f <= 0 ? 0.f : f - std::floor(f);
        if (s >= ssize - 1) s = ssize - 1, f = 0.f;
        taps.push_back({d, s, 1.f - f});
        taps.push_back({d, std::min(s + 1, ssize - 1), f});
    }
    return taps;
}

Image resize_area(const Image& src, int dw, int dh) {
    // OpenCV derives the scale from the inverse ratio; keep its rounding.
    const double sx = 1.0 / (static_cast<double>(dw) / src.w);
    const double sy = 1.0 / (static_cast<double>(dh) / src.h);
    const bool area = sx >= 1 && sy >= 1;
    const std::vector<Tap> xt = area ? area_taps(src.w, dw, sx) : linear_taps(src.w, dw, sx);
    const std::vector<Tap> yt = area ? area_taps(src.h, dh, sy) : linear_taps(src.h, dh, sy);

    Image dst;
    dst.w = dw, dst.h = dh;
    dst.px.assign(static_cast<size_t>(dw) * dh * 3, 0.f);
    std::vector<float> row(static_cast<size_t>(dw) * 3);
    for (const Tap& ty : yt) {
        // Horizontal pass over one source row, then accumulate it vertically.
        std::fill(row.begin(), row.end(), 0.f);
        for (const Tap& tx : xt) {
            const float* s = src.at(ty.src, tx.src);
            for (int c = 0; c < 3; c++) row[tx.dst * 3 + c] += s[c] * tx.w;
        }
        float* d = dst.at(ty.dst, 0);
        for (int i = 0; i < dw * 3; i++) d[i] += ty.w * row[i];
    }
    return dst;
}

ncnn::Mat to_input(const Image& im, const InputContract& c) { return to_input(im.px.data(), im.w, im.h, c); }

std::vector<float> flatten(const ncnn::Mat& m) {
    std::vector<float> out;
    const int plane = m.w * m.h * m.d;
    for (int q = 0; q < m.c; q++) {
        const float* p = m.channel(q);
        out.insert(out.end(), p, p + plane);
    }
    return out;
}

// Greedy NMS, best score first; "min" mode (last stage) also removes a small
// box nested in a big one. Ties keep input order, like numpy's stable argsort.
std::vector<int> nms(const std::vector<Box>& boxes, float threshold, bool min_mode) {
    std::vector<int> order(boxes.size());
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(),
                     [&](int a, int b) { return boxes[a].score > boxes[b].score; });
    std::vector<float> area(boxes.size());
    for (size_t i = 0; i < boxes.size(); i++)
        area[i] = std::max(boxes[i].x2 - boxes[i].x1, 0.f) * std::max(boxes[i].y2 - boxes[i].y1, 0.f);
    std::vector<int> keep;
    while (!order.empty()) {
        const int i = order[0];
        keep.push_back(i);
        std::vector<int> rest;
        for (size_t k = 1; k < order.size(); k++) {
            const int j = order[k];
            const float w = std::max(0.f, std::min(boxes[i].x2, boxes[j].x2) - std::max(boxes[i].x1, boxes[j].x1));
            const float h = std::max(0.f, std::min(boxes[i].y2, boxes[j].y2) - std::max(boxes[i].y1, boxes[j].y1));
            const float inter = w * h;
            const float denom = min_mode ? std::min(area[i], area[j]) : area[i] + area[j] - inter;
            if (inter / std::max(denom, 1e-12f) <= threshold) rest.push_back(j);
        }
        order.swap(rest);
    }
    return keep;
}

std::vector<Box> pick(const std::vector<Box>& boxes, const std::vector<int>& idx) {
    std::vector<Box> out;
    for (int i : idx) out.push_back(boxes[i]);
    return out;
}

// The networks' offsets are fractions of the box size (_regress).
void regress(Box& b) {
    const float w = b.x2 - b.x1, h = b.y2 - b.y1;
    b.x1 += b.reg[0] * w;
    b.y1 += b.reg[1] * h;
    b.x2 += b.reg[2] * w;
    b.y2 += b.reg[3] * h;
}

// Square around the centre, as the next net expects (_square).
void square(Box& b) {
    const float w = b.x2 - b.x1, h = b.y2 - b.y1, side = std::max(w, h);
    b.x1 += (w - side) / 2;
    b.y1 += (h - side) / 2;
    b.x2 = b.x1 + side;
    b.y2 = b.y1 + side;
}

// The integer crop box of _crops: floor, and at least one pixel wide.
void crop_box(const Box& b, int ib[4]) {
    ib[0] = static_cast<int>(std::floor(b.x1));
    ib[1] = static_cast<int>(std::floor(b.y1));
    ib[2] = std::max(static_cast<int>(std::floor(b.x2)), ib[0] + 1);
    ib[3] = std::max(static_cast<int>(std::floor(b.y2)), ib[1] + 1);
}

// The box's crop resized to the net's width x height; zero outside the image (_crops).
Image crop(const Image& im, const int ib[4], int width, int height) {
    Image patch;
    patch.w = ib[2] - ib[0], patch.h = ib[3] - ib[1];
    patch.px.assign(static_cast<size_t>(patch.w) * patch.h * 3, 0.f);
    const int x1 = std::max(ib[0], 0), y1 = std::max(ib[1], 0);
    const int x2 = std::min(ib[2], im.w), y2 = std::min(ib[3], im.h);
    for (int y = y1; y < y2; y++)
        for (int x = x1; x < x2; x++) std::memcpy(patch.at(y - ib[1], x - ib[0]), im.at(y, x), 3 * sizeof(float));
    return resize_area(patch, width, height);
}

// The ncnn options of every net the app runs. They are the ones every place
// the Python side runs ncnn uses (mfn_deploy.export.backends.load_ncnn_net:
// the export's parity check, `mfn-deploy check`, the Python ncnn face pipeline
// the host tests compare with, the host benchmark), so the phone computes what
// those checked:
//   use_vulkan_compute = false     CPU only, as in Python;
//   num_threads                    the app's setting (Python: 1 unless asked;
//                                  fp32 results do not depend on it);
//   use_fp16_packed / use_fp16_storage / use_fp16_arithmetic = fp16 and
//   use_bf16_storage = false       fp32 is really fp32 (ncnn would otherwise
//                                  turn on reduced precision where the CPU
//                                  has it); fp16 only when FaceEngine.configure
//                                  asks, as `--fp16` does in Python;
//   everything else at ncnn's defaults, in both places: lightmode on
//   (intermediate blobs freed once consumed), packing layout, winograd and
//   sgemm convolution on, flush_denormals as ncnn sets it.
// CPU affinity (powersave) is process-wide: set_options, like load_ncnn_net's
// optional powersave. Options must be set before load_param (load applies them).
void configure_ncnn(ncnn::Option& opt, int num_threads, bool fp16) {
    opt.use_vulkan_compute = false;
    opt.num_threads = num_threads;
    opt.use_fp16_packed = fp16;
    opt.use_fp16_storage = fp16;
    opt.use_fp16_arithmetic = fp16;
    opt.use_bf16_storage = false;
}

bool has_blob(const ncnn::Net& net, const std::string& name) {
    for (const ncnn::Blob& b : net.blobs())
        if (b.name == name) return true;
    return false;
}

}  // namespace

const char* net_name(Net which) {
    switch (which) {
        case Net::kPNet: return "pnet";
        case Net::kRNet: return "rnet";
        case Net::kONet: return "onet";
        case Net::kEmbedder: return "embedder";
    }
    return "?";
}

bool parse_contract(const std::string& text, Net which, InputContract* out, std::string* error) {
    std::string sink;
    std::string& err = error ? *error : sink;
    const bool embedder = which == Net::kEmbedder, pnet = which == Net::kPNet;
    if (text.size() > kMaxContractBytes) return err = "contract: larger than 64 KiB", false;
    if (text.find('\0') != std::string::npos) return err = "contract: not a text file (NUL byte)", false;

    static const char* const kKeys[] = {"format",   "net",         "height",     "width",
                                        "channel_order", "mean",   "scale",      "input_blob",
                                        "output_blob",   "landmark_template"};
    const int n_keys = embedder ? 10 : 9;  // the template belongs to the embedder alone
    std::string value[10];
    int line_of[10] = {0};
    std::istringstream lines(text);
    std::string line;
    for (int no = 1; std::getline(lines, line); no++) {
        const std::string where = "contract line " + std::to_string(no) + ": ";
        line = trim(line);
        if (line.empty() || line[0] == '#') continue;
        const size_t eq = line.find('=');
        if (eq == std::string::npos) return err = where + "expected key=value, got " + quote(line), false;
        const std::string key = trim(line.substr(0, eq));
        int k = 0;
        while (k < n_keys && key != kKeys[k]) k++;
        if (k == n_keys) return err = where + "unknown key " + quote(key) + " for " + net_name(which), false;
        if (line_of[k]) return err = where + "'" + key + "' repeats line " + std::to_string(line_of[k]), false;
        line_of[k] = no;
        value[k] = trim(line.substr(eq + 1));
    }
    for (int k = 0; k < n_keys; k++)
        if (!line_of[k]) return err = std::string("contract: missing key '") + kKeys[k] + "'", false;

    InputContract c;
    auto bad = [&](int k, const std::string& want) {
        err = "contract line " + std::to_string(line_of[k]) + ": " + kKeys[k] + " must be " + want +
              ", got " + quote(value[k]);
        return false;
    };
    if (value[0] != kContractFormat) return bad(0, kContractFormat);
    if (value[1] != net_name(which)) return bad(1, std::string(net_name(which)) + " (the file of another net?)");
    // P-Net runs on every pyramid level: any size; the others take a fixed one.
    const std::string side = pnet ? "'any' (P-Net is fully convolutional)" : "an integer 1..4096";
    if (!parse_side(value[2], pnet, &c.height) || (pnet != (c.height == 0))) return bad(2, side);
    if (!parse_side(value[3], pnet, &c.width) || (pnet != (c.width == 0))) return bad(3, side);
    if (value[4] != "RGB" && value[4] != "BGR") return bad(4, "RGB or BGR");
    c.bgr = value[4] == "BGR";
    double mean[3], scale[3];
    if (!parse_numbers(value[5], 3, true, mean)) return bad(5, "1 or 3 comma-separated finite numbers");
    if (!parse_numbers(value[6], 3, true, scale) || !(scale[0] > 0 && scale[1] > 0 && scale[2] > 0))
        return bad(6, "1 or 3 comma-separated positive numbers");
    for (int k = 0; k < 3; k++) {
        c.mean[k] = static_cast<float>(mean[k]), c.scale[k] = static_cast<float>(scale[k]);
        if (!std::isfinite(c.mean[k])) return bad(5, "within float range");
        if (!std::isfinite(c.scale[k]) || !(c.scale[k] > 0)) return bad(6, "within float range");
    }
    if (!blob_name_ok(value[7])) return bad(7, "an ncnn blob name (printable ASCII, no spaces)");
    if (!blob_name_ok(value[8])) return bad(8, "an ncnn blob name (printable ASCII, no spaces)");
    c.input_blob = value[7], c.output_blob = value[8];
    if (embedder && !parse_numbers(value[9], 10, false, c.landmark_template))
        return bad(9, "10 comma-separated numbers (x, y of 5 landmarks)");
    if (out) *out = c;
    return true;
}

bool FaceEngine::fail(const std::string& message) {
    error_ = message;
    return false;
}

void FaceEngine::set_options(const EngineOptions& options) {
    options_ = options;
    ncnn::set_cpu_powersave(options_.powersave);
    // Extractors copy the net's options when created, so a new thread count
    // applies from the next frame without reloading.
    for (ncnn::Net& net : nets_) net.opt.num_threads = options_.num_threads;
}

bool FaceEngine::load(Net which, const std::string& param, const std::vector<unsigned char>& bin,
                      const std::string& contract) {
    const int i = static_cast<int>(which);
    const std::string name = net_name(which);
    error_.clear();
    loaded_[i] = false;
    contracts_[i] = InputContract();
    ncnn::Net& net = nets_[i];
    net.clear();
    InputContract c;
    std::string why;
    if (!parse_contract(contract, which, &c, &why)) return fail(name + " " + why);
    configure_ncnn(net.opt, options_.num_threads, options_.fp16);
    // ncnn keeps pointers into the weights: hold an aligned copy for the net's life.
    weights_[i] = bin;
    if (net.load_param_mem(param.c_str()) != 0) return fail(name + ": ncnn rejected the .param");
    if (weights_[i].empty() || net.load_model(weights_[i].data()) != weights_[i].size())
        return net.clear(), fail(name + ": ncnn rejected the .bin (size does not fit the .param)");
    for (const std::string* blob : {&c.input_blob, &c.output_blob})
        if (!has_blob(net, *blob))
            return net.clear(), fail(name + " contract: the model has no blob " + quote(*blob));
    contracts_[i] = c;
    loaded_[i] = true;
    return true;
}

bool FaceEngine::ready() const { return loaded_[0] && loaded_[1] && loaded_[2] && loaded_[3]; }

bool FaceEngine::run(Net which, const ncnn::Mat& in, ncnn::Mat& out) {
    const InputContract& c = contract(which);
    ncnn::Extractor ex = nets_[static_cast<int>(which)].create_extractor();
    if (ex.input(c.input_blob.c_str(), in) != 0 || ex.extract(c.output_blob.c_str(), out) != 0 || out.empty())
        return fail(std::string(net_name(which)) + ": ncnn could not run " + c.input_blob + " -> " + c.output_blob);
    return true;
}

std::vector<Face> FaceEngine::detect(const unsigned char* pixels, int width, int height, int stride,
                                     PixelFormat format) {
    const double t0 = ncnn::get_current_time();
    std::vector<Face> faces;
    error_.clear();
    if (!(loaded_[0] && loaded_[1] && loaded_[2])) return fail("detect: pnet, rnet and onet must be loaded"), faces;
    if (width <= 0 || height <= 0) return fail("detect: empty image"), faces;
    const EngineOptions& o = options_;
    const InputContract &pc = contracts_[0], &rc = contracts_[1], &oc = contracts_[2];

    Image im;
    im.w = width, im.h = height;
    const std::vector<unsigned char> rgb = to_rgb8(pixels, width, height, stride, format);
    im.px.assign(rgb.begin(), rgb.end());

    // Stage 1: P-Net over the pyramid (pyramid_scales, _stage1).
    std::vector<Box> cand;
    double scale = static_cast<double>(kPNetCell) / o.min_face;
    double side = std::min(width, height) * scale;
    for (; side >= kPNetCell; scale *= o.scale_factor, side *= o.scale_factor) {
        const int hs = static_cast<int>(height * scale + 1), ws = static_cast<int>(width * scale + 1);
        ncnn::Mat out;
        if (!run(Net::kPNet, to_input(resize_area(im, ws, hs), pc), out)) return {};
        if (out.c < 6) return fail("pnet: " + std::to_string(out.c) + " output channels, expected 6"), faces;
        std::vector<Box> level;
        for (int y = 0; y < out.h; y++) {
            for (int x = 0; x < out.w; x++) {
                const float p = out.channel(1).row(y)[x];
                if (p < o.thresholds[0]) continue;
                Box b;
                b.x1 = static_cast<float>(std::floor((kPNetStride * x + 1) / scale));
                b.y1 = static_cast<float>(std::floor((kPNetStride * y + 1) / scale));
                b.x2 = static_cast<float>(std::floor((kPNetStride * x + kPNetCell) / scale));
                b.y2 = static_cast<float>(std::floor((kPNetStride * y + kPNetCell) / scale));
                b.score = p;
                for (int k = 0; k < 4; k++) b.reg[k] = out.channel(2 + k).row(y)[x];
                level.push_back(b);
            }
        }
        for (const Box& b : pick(level, nms(level, o.nms[0], false))) cand.push_back(b);
    }
    cand = pick(cand, nms(cand, o.nms[1], false));
    for (Box& b : cand) regress(b), square(b);

    // Stage 2: R-Net on crops at its contract's size (24x24).
    std::vector<Box> kept;
    for (const Box& b : cand) {
        int ib[4];
        crop_box(b, ib);
        ncnn::Mat m;
        if (!run(Net::kRNet, to_input(crop(im, ib, rc.width, rc.height), rc), m)) return {};
        const std::vector<float> out = flatten(m);
        if (out.size() < 6) return fail("rnet: " + std::to_string(out.size()) + " outputs, expected 6"), faces;
        if (!(out[1] > o.thresholds[1])) continue;
        Box k = b;
        k.score = out[1];
        std::copy(out.begin() + 2, out.begin() + 6, k.reg);
        kept.push_back(k);
    }
    kept = pick(kept, nms(kept, o.nms[2], false));
    for (Box& b : kept) regress(b), square(b);

    // Stage 3: O-Net on crops at its contract's size (48x48); box and landmarks
    // relative to the integer crop box O-Net actually saw.
    std::vector<Box> final_boxes;
    std::vector<Face> found;
    for (const Box& b : kept) {
        int ib[4];
        crop_box(b, ib);
        ncnn::Mat m;
        if (!run(Net::kONet, to_input(crop(im, ib, oc.width, oc.height), oc), m)) return {};
        const std::vector<float> out = flatten(m);
        if (out.size() < 16) return fail("onet: " + std::to_string(out.size()) + " outputs, expected 16"), faces;
        if (!(out[1] > o.thresholds[2])) continue;
        Box r;
        r.x1 = static_cast<float>(ib[0]), r.y1 = static_cast<float>(ib[1]);
        r.x2 = static_cast<float>(ib[2]), r.y2 = static_cast<float>(ib[3]);
        r.score = out[1];
        std::copy(out.begin() + 2, out.begin() + 6, r.reg);
        Face f;
        const float w = static_cast<float>(ib[2] - ib[0]), h = static_cast<float>(ib[3] - ib[1]);
        for (int k = 0; k < 5; k++) {
            f.landmarks[2 * k] = static_cast<float>(ib[0] + static_cast<double>(w * out[6 + k]));
            f.landmarks[2 * k + 1] = static_cast<float>(ib[1] + static_cast<double>(h * out[11 + k]));
        }
        regress(r);
        f.box[0] = r.x1, f.box[1] = r.y1, f.box[2] = r.x2, f.box[3] = r.y2;
        f.score = r.score;
        final_boxes.push_back(r);
        found.push_back(f);
    }
    for (int i : nms(final_boxes, o.nms[3], true)) faces.push_back(found[i]);
    times_.detect_ms = ncnn::get_current_time() - t0;
    return faces;
}

bool similarity_transform(const float landmarks[10], const double templ[10], double m[6]) {
    // Closed-form 2-D Umeyama: for a rotation+scale the optimum is
    // s*R = [[a, -b], [b, a]] / |src|^2 with a, b the summed dot and cross
    // products of the centred point sets; identical to skimage's SVD route.
    double src[10], dst[10], sm[2] = {0, 0}, dm[2] = {0, 0};
    for (int k = 0; k < 5; k++) {
        src[2 * k] = landmarks[2 * k], src[2 * k + 1] = landmarks[2 * k + 1];
        dst[2 * k] = templ[2 * k], dst[2 * k + 1] = templ[2 * k + 1];
        for (int c = 0; c < 2; c++) sm[c] += src[2 * k + c] / 5, dm[c] += dst[2 * k + c] / 5;
    }
    double a = 0, b = 0, var = 0;
    for (int k = 0; k < 5; k++) {
        const double sx = src[2 * k] - sm[0], sy = src[2 * k + 1] - sm[1];
        const double dx = dst[2 * k] - dm[0], dy = dst[2 * k + 1] - dm[1];
        a += sx * dx + sy * dy;
        b += sx * dy - sy * dx;
        var += sx * sx + sy * sy;
    }
    if (var < 1e-12 || (a == 0 && b == 0)) return false;
    a /= var, b /= var;
    m[0] = a, m[1] = -b, m[2] = dm[0] - (a * sm[0] - b * sm[1]);
    m[3] = b, m[4] = a, m[5] = dm[1] - (b * sm[0] + a * sm[1]);
    return true;
}

std::vector<unsigned char> FaceEngine::align(const unsigned char* pixels, int width, int height,
                                             int stride, PixelFormat format, const float landmarks[10]) {
    const double t0 = ncnn::get_current_time();
    error_.clear();
    // The embedder's contract gives the crop's size and the landmark template.
    if (!loaded_[3]) return fail("align: the embedder must be loaded (its contract gives size and template)"), std::vector<unsigned char>();
    if (width <= 0 || height <= 0) return fail("align: empty image"), std::vector<unsigned char>();
    const InputContract& c = contracts_[3];
    const int ow = c.width, oh = c.height;
    double m[6];
    if (!similarity_transform(landmarks, c.landmark_template, m))
        return fail("align: degenerate landmarks"), std::vector<unsigned char>();
    const std::vector<unsigned char> rgb = to_rgb8(pixels, width, height, stride, format);

    // Invert in double, sample in float: what cv2.warpAffine(INTER_LINEAR,
    // border 0) does in OpenCV 5; it differs from it by one level on a
    // handful of pixels. ncnn's warpaffine uses fixed point and differs more.
    const double det = m[0] * m[4] - m[1] * m[3];
    const float i0 = static_cast<float>(m[4] / det), i1 = static_cast<float>(-m[1] / det);
    const float i3 = static_cast<float>(-m[3] / det), i4 = static_cast<float>(m[0] / det);
    const float i2 = static_cast<float>(-(m[4] * m[2] - m[1] * m[5]) / det);
    const float i5 = static_cast<float>(-(-m[3] * m[2] + m[0] * m[5]) / det);

    std::vector<unsigned char> out(static_cast<size_t>(ow) * oh * 3);
    for (int y = 0; y < oh; y++) {
        for (int x = 0; x < ow; x++) {
            const float sx = i0 * x + i1 * y + i2, sy = i3 * x + i4 * y + i5;
            const float fx0 = std::floor(sx), fy0 = std::floor(sy);
            const int x0 = static_cast<int>(fx0), y0 = static_cast<int>(fy0);
            const float fx = sx - fx0, fy = sy - fy0;
            for (int c = 0; c < 3; c++) {
                float p[4];
                for (int k = 0; k < 4; k++) {
                    const int xx = x0 + (k & 1), yy = y0 + (k >> 1);
                    const bool inside = xx >= 0 && xx < width && yy >= 0 && yy < height;
                    p[k] = inside ? rgb[(static_cast<size_t>(yy) * width + xx) * 3 + c] : 0.f;
                }
                const float top = p[0] + fx * (p[1] - p[0]), bottom = p[2] + fx * (p[3] - p[2]);
                const float v = std::nearbyint(top + fy * (bottom - top));
                out[(static_cast<size_t>(y) * ow + x) * 3 + c] =
                    static_cast<unsigned char>(std::min(std::max(v, 0.f), 255.f));
            }
        }
    }
    times_.align_ms = ncnn::get_current_time() - t0;
    return out;
}

std::vector<float> FaceEngine::embed(const unsigned char* pixels, int width, int height, int stride,
                                     PixelFormat format, const float landmarks[10]) {
    const std::vector<unsigned char> face = align(pixels, width, height, stride, format, landmarks);
    if (face.empty()) return {};  // error_ says why
    const double t0 = ncnn::get_current_time();
    const InputContract& c = contracts_[3];
    ncnn::Mat out;
    if (!run(Net::kEmbedder, to_input(face.data(), c.width, c.height, c), out)) return {};
    std::vector<float> e = flatten(out);
    float n2 = 0;
    for (float v : e) n2 += v * v;
    const float n = std::max(std::sqrt(n2), 1e-12f);
    for (float& v : e) v /= n;
    times_.embed_ms = ncnn::get_current_time() - t0;
    return e;
}

FaceEngine::Benchmark FaceEngine::benchmark(const unsigned char* pixels, int width, int height,
                                            int stride, PixelFormat format, int loops) {
    Benchmark r;
    std::vector<double> t[3];
    for (int i = -1; i < loops; i++) {  // i == -1: warm-up, not recorded
        StageTimes s;
        const std::vector<Face> faces = detect(pixels, width, height, stride, format);
        s.detect_ms = times_.detect_ms;
        if (!faces.empty()) {
            embed(pixels, width, height, stride, format, faces[0].landmarks);
            s.align_ms = times_.align_ms, s.embed_ms = times_.embed_ms;
        }
        if (i < 0) continue;
        r.faces = static_cast<int>(faces.size());
        t[0].push_back(s.detect_ms), t[1].push_back(s.align_ms), t[2].push_back(s.embed_ms);
    }
    r.loops = std::max(loops, 0);
    if (r.loops == 0) return r;
    double med[3], lo[3];
    for (int k = 0; k < 3; k++) {
        std::sort(t[k].begin(), t[k].end());
        med[k] = t[k][t[k].size() / 2], lo[k] = t[k][0];
    }
    r.median.detect_ms = med[0], r.median.align_ms = med[1], r.median.embed_ms = med[2];
    r.min.detect_ms = lo[0], r.min.align_ms = lo[1], r.min.embed_ms = lo[2];
    return r;
}

float cosine(const float* a, const float* b, int n) {
    double dot = 0, na = 0, nb = 0;
    for (int i = 0; i < n; i++) dot += a[i] * b[i], na += a[i] * a[i], nb += b[i] * b[i];
    const double d = std::sqrt(na * nb);
    return d > 1e-12 ? static_cast<float>(dot / d) : 0.f;
}

int best_match(const float* query, const float* gallery, int count, int dim, float* score) {
    int best = -1;
    float best_score = -2.f;
    for (int i = 0; i < count; i++) {
        const float s = cosine(query, gallery + static_cast<size_t>(i) * dim, dim);
        if (s > best_score) best = i, best_score = s;
    }
    if (score) *score = best < 0 ? 0.f : best_score;
    return best;
}

const char* ncnn_version() { return NCNN_VERSION_STRING; }

}  // namespace mfn
