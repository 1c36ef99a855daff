// mfn-bench: time one ncnn model (param/bin pair) and print one JSON object.
//
// Built for the host and, statically, for ARM phones where it is pushed to
// /data/local/tmp and run under `adb shell`. See `mfn-bench --help`.
//
// Exit status: 0 success, 1 runtime failure (files, model, inference),
// 2 bad command line, 3 fatal signal. Every failure prints exactly one line
// on stderr starting with "mfn-bench: error:".

#include <net.h>
#include <cpu.h>
#include <datareader.h>
#include <platform.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <csignal>
#include <cstdarg>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <errno.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "raw float32 files are read and written in host order, which must be little-endian"
#endif

#ifndef MFN_BENCH_VERSION
#define MFN_BENCH_VERSION "dev"
#endif
#ifndef NCNN_VERSION_STRING
#define NCNN_VERSION_STRING "unknown"
#endif

namespace {

const char* const kUsage =
    "usage: mfn-bench --param FILE --bin FILE [options]\n"
    "\n"
    "Loads an ncnn model, runs it and prints one JSON object on stdout.\n"
    "\n"
    "  --param FILE         ncnn .param file (text)\n"
    "  --bin FILE           ncnn .bin weights; must be exactly what the param needs\n"
    "  --input FILE         raw little-endian float32 CHW tensor, already normalised;\n"
    "                       without it a seeded pattern is used (see --seed)\n"
    "  --shape W,H,C        input width, height, channels (default 112,112,3)\n"
    "  --seed N             pattern seed (default 0). Element i (CHW order) is\n"
    "                         s_0 = N, s_{i+1} = s_i * 6364136223846793005\n"
    "                                       + 1442695040888963407 (mod 2^64)\n"
    "                         x_i = (s_{i+1} >> 40) / 2^23 - 1, in [-1, 1)\n"
    "  --threads N          worker threads (default 4)\n"
    "  --powersave 0|1|2    0 all cores (leave affinity as inherited), 1 little, 2 big\n"
    "  --warmup N           untimed runs before timing (default 3)\n"
    "  --loops N            timed runs (default 10; 0 only loads and warms up)\n"
    "  --cooldown SEC       sleep after the cold run, before warmup (default 0)\n"
    "  --pace-ms N          start runs at least N ms apart, like camera frames (the\n"
    "                       cold run is frame 0; a run longer than N starts the next\n"
    "                       frame at once); default 0: back to back\n"
    "  --profile            after the timed runs, profile max(loops, 1) more runs layer\n"
    "                       by layer and add \"profile\" to the JSON (see below)\n"
    "  --fp16 on|off        fp16 storage+arithmetic+packed (default off)\n"
    "  --dump FILE          write the last output as raw little-endian float32 (with\n"
    "                       --loops 0 --warmup 0, the cold run's: one inference)\n"
    "  --input-blob NAME    default in0 (pnnx naming)\n"
    "  --output-blob NAME   default out0 (pnnx naming)\n"
    "  --expect-dim N       fail (exit 2) unless the output holds exactly N values,\n"
    "                       e.g. the embedding size of the export's manifest; one\n"
    "                       extra run after loading checks it (default: no check)\n"
    "  --version, --help\n"
    "\n"
    "Besides the timed runs the JSON holds load_ms_param and load_ms_bin (reading and\n"
    "preparing each file; load_ms is their sum), cold_ms (the first inference after\n"
    "loading, which also checks the input shape; not in times_ms), and the process's\n"
    "peak resident memory (VmHWM) after loading and at the end, in kB.\n"
    "--profile: ncnn is built without NCNN_BENCHMARK, so each profiled run extracts\n"
    "every layer's output in execution order with one extractor and times each call;\n"
    "ncnn keeps what is computed, so each call runs exactly that layer. Layer ms are\n"
    "means over the profiled runs; share is of their sum; run_ms is the mean wall time\n"
    "of a whole profiled run, to compare the sum with.\n";

// Where fatal-signal messages go; moved while ncnn's stderr is captured.
volatile int g_stderr_fd = 2;

void die(int status, const char* fmt, ...) __attribute__((noreturn, format(printf, 2, 3)));
void die(int status, const char* fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    // Newlines from file names or ncnn messages would break the one-line promise.
    for (char* p = msg; *p; p++)
        if (*p == '\n' || *p == '\r') *p = ' ';
    fprintf(stderr, "mfn-bench: error: %s\n", msg);
    exit(status);
}

// A malformed model that slips past ncnn's validation can still fault deep in
// a kernel; the user must then get a message rather than a bare "Segmentation
// fault" (which adb shell does not even print).
void on_fatal_signal(int sig)
{
    char msg[128];
    int n = snprintf(msg, sizeof(msg),
                     "mfn-bench: error: fatal signal %d (model/input shape mismatch or corrupt model?)\n", sig);
    if (n > 0) (void)!write(g_stderr_fd, msg, (size_t)n);
    _exit(3);
}

struct Options
{
    std::string param, bin, input, dump;
    int w = 112, h = 112, c = 3;
    uint64_t seed = 0;
    int threads = 4;
    int powersave = 0;
    int warmup = 3;
    int loops = 10;
    long expect_dim = 0; // 0: no check
    double cooldown = 0.0;
    long pace_ms = 0; // 0: runs back to back
    bool profile = false;
    bool fp16 = false;
    std::string input_blob = "in0";
    std::string output_blob = "out0";
};

long parse_int(const char* opt, const char* s, long lo, long hi)
{
    char* end = nullptr;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi)
        die(2, "%s expects an integer in [%ld, %ld], got '%s'", opt, lo, hi, s);
    return v;
}

void parse_shape(const char* s, Options& o)
{
    int w, h, c, consumed = 0;
    if (sscanf(s, "%d,%d,%d%n", &w, &h, &c, &consumed) != 3 || s[consumed] != '\0')
        die(2, "--shape expects W,H,C, got '%s'", s);
    // 1<<14 per side is far beyond any face crop and keeps W*H*C*4 in range.
    if (w < 1 || h < 1 || c < 1 || w > 16384 || h > 16384 || c > 16384 || (long long)w * h * c > (1LL << 28))
        die(2, "--shape %s is out of range (each side 1..16384, at most 2^28 elements)", s);
    o.w = w;
    o.h = h;
    o.c = c;
}

Options parse_args(int argc, char** argv)
{
    Options o;
    for (int i = 1; i < argc; i++)
    {
        std::string a = argv[i];
        if (a == "--help" || a == "-h")
        {
            fputs(kUsage, stdout);
            exit(0);
        }
        if (a == "--version")
        {
            printf("mfn-bench %s (ncnn %s)\n", MFN_BENCH_VERSION, NCNN_VERSION_STRING);
            exit(0);
        }
        if (a.compare(0, 2, "--") != 0)
            die(2, "unexpected argument '%s' (see --help)", a.c_str());
        if (a == "--profile") // the one flag without a value
        {
            o.profile = true;
            continue;
        }
        if (i + 1 >= argc)
            die(2, "%s needs a value (see --help)", a.c_str());
        const char* v = argv[++i];

        if (a == "--param") o.param = v;
        else if (a == "--bin") o.bin = v;
        else if (a == "--input") o.input = v;
        else if (a == "--dump") o.dump = v;
        else if (a == "--shape") parse_shape(v, o);
        else if (a == "--seed") o.seed = (uint64_t)parse_int("--seed", v, 0, 0x7fffffffL);
        else if (a == "--threads") o.threads = (int)parse_int("--threads", v, 1, 256);
        else if (a == "--powersave") o.powersave = (int)parse_int("--powersave", v, 0, 2);
        else if (a == "--warmup") o.warmup = (int)parse_int("--warmup", v, 0, 1000000);
        else if (a == "--loops") o.loops = (int)parse_int("--loops", v, 0, 1000000);
        else if (a == "--pace-ms") o.pace_ms = parse_int("--pace-ms", v, 0, 60000);
        else if (a == "--expect-dim") o.expect_dim = parse_int("--expect-dim", v, 1, 1L << 28);
        else if (a == "--input-blob") o.input_blob = v;
        else if (a == "--output-blob") o.output_blob = v;
        else if (a == "--fp16")
        {
            std::string s = v;
            if (s != "on" && s != "off") die(2, "--fp16 expects on or off, got '%s'", v);
            o.fp16 = (s == "on");
        }
        else if (a == "--cooldown")
        {
            char* end = nullptr;
            o.cooldown = strtod(v, &end);
            if (end == v || *end || !(o.cooldown >= 0.0 && o.cooldown <= 3600.0))
                die(2, "--cooldown expects seconds in [0, 3600], got '%s'", v);
        }
        else die(2, "unknown option '%s' (see --help)", a.c_str());
    }
    if (o.param.empty()) die(2, "--param is required (see --help)");
    if (o.bin.empty()) die(2, "--bin is required (see --help)");
    return o;
}

// ncnn reports load problems with NCNN_LOGE straight to stderr, sometimes over
// several lines. To keep our one-line contract, fd 2 points at an anonymous
// memory file while ncnn loads, and ncnn's last message is folded into ours.
// If memfd_create is unavailable (old kernel, seccomp) ncnn just prints as usual.
class StderrCapture
{
public:
    StderrCapture()
    {
        fflush(stderr);
        mem_fd_ = memfd_create("ncnn-stderr", 0);
        if (mem_fd_ < 0) return;
        saved_fd_ = dup(2);
        if (saved_fd_ < 0 || dup2(mem_fd_, 2) < 0)
        {
            close(mem_fd_);
            mem_fd_ = -1;
            return;
        }
        g_stderr_fd = saved_fd_;
    }
    ~StderrCapture() { release(); }

    // Restores stderr and returns the last non-empty line ncnn wrote.
    std::string release()
    {
        if (mem_fd_ < 0) return last_line_;
        fflush(stderr);
        dup2(saved_fd_, 2);
        g_stderr_fd = 2;
        close(saved_fd_);
        std::string text;
        char buf[4096];
        ssize_t n;
        off_t off = 0;
        while ((n = pread(mem_fd_, buf, sizeof(buf), off)) > 0)
        {
            text.append(buf, (size_t)n);
            off += n;
        }
        close(mem_fd_);
        mem_fd_ = -1;
        while (!text.empty() && (text.back() == '\n' || text.back() == '\r')) text.pop_back();
        size_t newline = text.find_last_of('\n');
        last_line_ = newline == std::string::npos ? text : text.substr(newline + 1);
        return last_line_;
    }

private:
    int mem_fd_ = -1;
    int saved_fd_ = -1;
    std::string last_line_;
};

// ncnn fails a layer whose weights come up short, but only with a generic
// "layer load_model failed", and nothing notices a .bin that is longer than
// the param needs (a mismatched pair). Weights are therefore read through this
// reader: a short read is reported as truncation, and afterwards the bytes
// ncnn consumed must equal the file size exactly.
class CountingFileReader : public ncnn::DataReader
{
public:
    explicit CountingFileReader(FILE* fp) : fp_(fp) {}
    size_t read(void* buf, size_t size) const override
    {
        size_t n = fread(buf, 1, size, fp_);
        consumed += n;
        if (n != size) short_read = true;
        return n;
    }
    mutable size_t consumed = 0;
    mutable bool short_read = false;

private:
    FILE* fp_;
};

FILE* open_or_die(const std::string& path, const char* what, long long* size)
{
    FILE* fp = fopen(path.c_str(), "rb");
    if (!fp) die(1, "cannot open %s '%s': %s", what, path.c_str(), strerror(errno));
    struct stat st;
    if (fstat(fileno(fp), &st) != 0 || !S_ISREG(st.st_mode))
        die(1, "%s '%s' is not a regular file", what, path.c_str());
    *size = (long long)st.st_size;
    return fp;
}

double ms_since(std::chrono::steady_clock::time_point t0)
{
    return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
}

struct LoadTimes
{
    double param_ms = 0, bin_ms = 0;
};

// Each time covers ncnn reading its file: for the param, parsing and creating the
// layers; for the bin, reading the weights and preparing every layer's kernels
// (ncnn packs and transforms weights in create_pipeline, during load_model).
LoadTimes load_model(ncnn::Net& net, const Options& o)
{
    LoadTimes times;
    long long param_size = 0, bin_size = 0;
    FILE* param_fp = open_or_die(o.param, "--param", &param_size);
    FILE* bin_fp = open_or_die(o.bin, "--bin", &bin_size);
    if (param_size == 0) die(1, "--param '%s' is empty", o.param.c_str());

    auto t0 = std::chrono::steady_clock::now();
    StderrCapture capture;
    int ret = net.load_param(param_fp);
    times.param_ms = ms_since(t0);
    std::string why = capture.release();
    fclose(param_fp);
    if (ret != 0)
        die(1, "cannot parse --param '%s' (ncnn: %s)", o.param.c_str(), why.empty() ? "no detail" : why.c_str());

    t0 = std::chrono::steady_clock::now();
    CountingFileReader reader(bin_fp);
    StderrCapture capture2;
    ret = net.load_model(reader);
    times.bin_ms = ms_since(t0);
    why = capture2.release();
    fclose(bin_fp);
    if (reader.short_read)
        die(1, "--bin '%s' is truncated: %lld bytes, the param needs more", o.bin.c_str(), bin_size);
    if (ret != 0)
        die(1, "cannot load --bin '%s' (ncnn: %s)", o.bin.c_str(), why.empty() ? "no detail" : why.c_str());
    if ((long long)reader.consumed != bin_size)
        die(1, "--bin '%s' has %lld bytes but the param uses %zu: param/bin mismatch", o.bin.c_str(), bin_size,
            reader.consumed);

    auto has = [](const std::vector<const char*>& names, const std::string& n) {
        return std::any_of(names.begin(), names.end(), [&](const char* s) { return n == s; });
    };
    if (!has(net.input_names(), o.input_blob))
        die(2, "no input blob '%s' in the param (try --input-blob %s)", o.input_blob.c_str(),
            net.input_names().empty() ? "?" : net.input_names()[0]);
    if (!has(net.output_names(), o.output_blob))
        die(2, "no output blob '%s' in the param (try --output-blob %s)", o.output_blob.c_str(),
            net.output_names().empty() ? "?" : net.output_names()[0]);
    return times;
}

// pnnx does not record the input shape in the .param and ncnn layers trust
// their inputs, so a --shape the model was not exported for gives garbage or
// an out-of-bounds read. Two facts in the param text pin the shape for face
// embedding nets: a convolution reading the input implies its channel count,
// and an InnerProduct implies how many values must reach it.
struct ParamLayer
{
    std::string type, name;
    std::vector<std::string> bottoms;
    std::map<int, long> params; // integer-valued entries only; all we need
};

std::vector<ParamLayer> read_param_layers(const std::string& path)
{
    std::ifstream f(path);
    std::string line;
    std::getline(f, line); // magic; ncnn has already validated the file
    std::getline(f, line); // layer and blob counts
    std::vector<ParamLayer> layers;
    while (std::getline(f, line))
    {
        std::istringstream ss(line);
        ParamLayer layer;
        int bottom_count = 0, top_count = 0;
        if (!(ss >> layer.type >> layer.name >> bottom_count >> top_count)) continue;
        std::string word;
        for (int i = 0; i < bottom_count && ss >> word; i++) layer.bottoms.push_back(word);
        for (int i = 0; i < top_count && ss >> word; i++) {} // top names are not needed
        while (ss >> word)
        {
            std::istringstream kv(word);
            int key;
            char eq;
            long value;
            if (kv >> key >> eq >> value && eq == '=') layer.params[key] = value;
        }
        layers.push_back(layer);
    }
    return layers;
}

long param_or(const ParamLayer& l, int key, long fallback)
{
    auto it = l.params.find(key);
    return it == l.params.end() ? fallback : it->second;
}

// The first inference after loading, timed as cold_ms: what an app pays for its
// first face (memory for every blob, worker threads starting, cold caches). It
// also checks the input shape against the model on the way, which costs nothing
// measurable: an InnerProduct's input is extracted (ncnn keeps it for the rest of
// the run) and its size compared, and with --expect-dim the output size.
double cold_run(ncnn::Net& net, const Options& o, const ncnn::Mat& in, ncnn::Mat& out)
{
    const std::vector<ParamLayer> layers = read_param_layers(o.param);
    for (const ParamLayer& l : layers)
    {
        bool conv = l.type == "Convolution" || l.type == "ConvolutionDepthWise";
        if (conv && !l.bottoms.empty() && l.bottoms[0] == o.input_blob)
        {
            // Convolution keys: 0 num_output, 1 kernel_w, 11 kernel_h, 6 weight size, 7 group.
            long k = param_or(l, 0, 0) * param_or(l, 1, 0) * param_or(l, 11, param_or(l, 1, 0));
            long group = l.type == "ConvolutionDepthWise" ? param_or(l, 7, 1) : 1;
            long channels = k > 0 ? param_or(l, 6, 0) * group / k : 0;
            if (channels > 0 && channels != o.c)
                die(2, "--shape %d,%d,%d does not fit the model: layer '%s' expects %ld input channels", o.w, o.h,
                    o.c, l.name.c_str(), channels);
        }
    }

    auto t0 = std::chrono::steady_clock::now();
    ncnn::Extractor ex = net.create_extractor();
    if (ex.input(o.input_blob.c_str(), in) != 0) die(1, "cannot set input blob '%s'", o.input_blob.c_str());
    for (const ParamLayer& l : layers)
    {
        if (l.type != "InnerProduct" || l.bottoms.size() != 1 || param_or(l, 0, 0) <= 0) continue;
        // InnerProduct keys: 0 num_output, 2 weight size.
        long expected = param_or(l, 2, 0) / param_or(l, 0, 0);
        ncnn::Mat reaching;
        // type 1: the blob as ncnn holds it (packed), so no conversion is timed.
        if (ex.extract(l.bottoms[0].c_str(), reaching, 1) != 0)
            die(1, "inference failed before layer '%s'", l.name.c_str());
        // A 2-D input is a stack of rows that each must hold num_input values.
        long got = reaching.dims == 2 ? reaching.w
                                      : (long)reaching.w * reaching.h * reaching.d * reaching.c * reaching.elempack;
        reaching.release(); // a second reference would make the next in-place layer copy it
        if (got != expected)
            die(2, "--shape %d,%d,%d does not fit the model: layer '%s' expects %ld values, gets %ld", o.w, o.h, o.c,
                l.name.c_str(), expected, got);
    }
    // A shape the layers accept can still be one the model was not made for (a
    // GDConv head on a smaller map gives 4x as many values): compare the output's
    // size with what the caller knows the model gives.
    if (ex.extract(o.output_blob.c_str(), out) != 0 || out.empty())
        die(1, "inference failed extracting '%s' (input shape wrong for this model?)", o.output_blob.c_str());
    double ms = ms_since(t0);
    long got = (long)out.w * out.h * out.d * out.c;
    if (o.expect_dim > 0 && got != o.expect_dim)
        die(2, "--shape %d,%d,%d does not fit the model: output '%s' has %ld values, --expect-dim is %ld", o.w, o.h,
            o.c, o.output_blob.c_str(), got, o.expect_dim);
    return ms;
}

// Starts runs at least --pace-ms apart, like frames from a camera: wait() before
// each run sleeps until the next frame is due; a run that overran its frame lets
// the next one start at once (the clock restarts from there, frames are not made up).
class Pacer
{
public:
    explicit Pacer(long pace_ms) : pace_(std::chrono::milliseconds(pace_ms)) {}
    void wait()
    {
        if (pace_.count() == 0) return;
        auto now = std::chrono::steady_clock::now();
        if (started_ && now < next_) std::this_thread::sleep_until(next_);
        else next_ = now;
        started_ = true;
        next_ += pace_;
    }

private:
    std::chrono::steady_clock::duration pace_;
    std::chrono::steady_clock::time_point next_;
    bool started_ = false;
};

struct LayerTime
{
    std::string name, type;
    double ms = 0;
};

struct Profile
{
    int runs = 0;
    double run_ms = 0; // mean wall time of a whole profiled run
    std::vector<LayerTime> layers;
};

// ncnn here is built without NCNN_BENCHMARK (its own per-layer timer), so layers
// are timed from outside: one extractor, every layer's first output extracted in
// execution (param) order. The extractor keeps computed blobs and runs only what is
// missing, so each call runs exactly one layer, its inputs being ready. type 1
// skips the unpacking a normal extract does; the reference is dropped at once so
// the next in-place layer does not copy the blob.
Profile profile_runs(ncnn::Net& net, const Options& o, const ncnn::Mat& in, Pacer& pacer)
{
    Profile p;
    const std::vector<ncnn::Layer*>& layers = net.layers();
    std::vector<double> acc(layers.size(), 0.0);
    p.runs = std::max(o.loops, 1);
    for (int r = 0; r < p.runs; r++)
    {
        pacer.wait();
        auto t0 = std::chrono::steady_clock::now();
        ncnn::Extractor ex = net.create_extractor();
        if (ex.input(o.input_blob.c_str(), in) != 0) die(1, "cannot set input blob '%s'", o.input_blob.c_str());
        for (size_t i = 0; i < layers.size(); i++)
        {
            if (layers[i]->tops.empty() || layers[i]->type == "Input") continue;
            auto t1 = std::chrono::steady_clock::now();
            ncnn::Mat m;
            if (ex.extract(layers[i]->tops[0], m, 1) != 0)
                die(1, "profiling failed at layer '%s'", layers[i]->name.c_str());
            m.release();
            acc[i] += ms_since(t1);
        }
        ncnn::Mat out;
        if (ex.extract(o.output_blob.c_str(), out) != 0 || out.empty())
            die(1, "inference failed extracting '%s'", o.output_blob.c_str());
        p.run_ms += ms_since(t0);
    }
    p.run_ms /= p.runs;
    for (size_t i = 0; i < layers.size(); i++)
    {
        if (layers[i]->tops.empty() || layers[i]->type == "Input") continue;
        LayerTime t;
        t.name = layers[i]->name;
        t.type = layers[i]->type;
        t.ms = acc[i] / p.runs;
        p.layers.push_back(t);
    }
    return p;
}

// Peak (VmHWM) or current (VmRSS) resident memory of this process in kB, from
// /proc/self/status; the peak falls back to getrusage where /proc is not readable.
long vm_kb(const char* key)
{
    std::ifstream f("/proc/self/status");
    std::string line;
    const size_t n = strlen(key);
    while (std::getline(f, line))
        if (line.compare(0, n, key) == 0 && line.size() > n && line[n] == ':') return atol(line.c_str() + n + 1);
    if (strcmp(key, "VmHWM") != 0) return 0;
    struct rusage ru;
    return getrusage(RUSAGE_SELF, &ru) == 0 ? ru.ru_maxrss : 0; // kB on Linux
}

ncnn::Mat make_input(const Options& o)
{
    const size_t plane = (size_t)o.w * o.h;
    const size_t count = plane * o.c;
    std::vector<float> data(count);
    if (!o.input.empty())
    {
        long long size = 0;
        FILE* fp = open_or_die(o.input, "--input", &size);
        if ((unsigned long long)size != count * sizeof(float))
            die(1, "--input '%s' has %lld bytes, but --shape %d,%d,%d needs %zu float32 = %zu bytes", o.input.c_str(),
                size, o.w, o.h, o.c, count, count * sizeof(float));
        if (fread(data.data(), sizeof(float), count, fp) != count)
            die(1, "cannot read --input '%s': %s", o.input.c_str(), strerror(errno));
        fclose(fp);
    }
    else
    {
        // The formula is in --help; it is trivial to reproduce in numpy, and the
        // top 24 bits make every value exact in float32.
        uint64_t s = o.seed;
        for (size_t i = 0; i < count; i++)
        {
            s = s * 6364136223846793005ULL + 1442695040888963407ULL;
            data[i] = (float)((double)(s >> 40) / 8388608.0 - 1.0);
        }
    }
    ncnn::Mat in(o.w, o.h, o.c);
    if (in.empty()) die(1, "cannot allocate input %dx%dx%d", o.w, o.h, o.c);
    // ncnn pads each channel to cstep, so copy plane by plane.
    for (int q = 0; q < o.c; q++)
        memcpy(in.channel(q), data.data() + q * plane, plane * sizeof(float));
    return in;
}

// Outermost dimension first, like numpy; ncnn has no batch axis, so a pnnx
// model with a (1, D) output reports [D].
std::vector<int> shape_of(const ncnn::Mat& m)
{
    switch (m.dims)
    {
    case 1: return {m.w};
    case 2: return {m.h, m.w};
    case 3: return {m.c, m.h, m.w};
    case 4: return {m.c, m.d, m.h, m.w};
    default: return {};
    }
}

void dump_output(const ncnn::Mat& out, const std::string& path)
{
    FILE* fp = fopen(path.c_str(), "wb");
    if (!fp) die(1, "cannot write --dump '%s': %s", path.c_str(), strerror(errno));
    const size_t per_channel = (size_t)out.w * out.h * out.d;
    for (int q = 0; q < out.c; q++)
    {
        if (fwrite(out.channel(q), sizeof(float), per_channel, fp) != per_channel)
            die(1, "cannot write --dump '%s': %s", path.c_str(), strerror(errno));
    }
    if (fclose(fp) != 0) die(1, "cannot write --dump '%s': %s", path.c_str(), strerror(errno));
}

double run_once(ncnn::Net& net, const Options& o, const ncnn::Mat& in, ncnn::Mat& out)
{
    auto t0 = std::chrono::steady_clock::now();
    ncnn::Extractor ex = net.create_extractor();
    if (ex.input(o.input_blob.c_str(), in) != 0) die(1, "cannot set input blob '%s'", o.input_blob.c_str());
    if (ex.extract(o.output_blob.c_str(), out) != 0 || out.empty())
        die(1, "inference failed extracting '%s' (input shape wrong for this model?)", o.output_blob.c_str());
    auto t1 = std::chrono::steady_clock::now();
    return std::chrono::duration<double, std::milli>(t1 - t0).count();
}

std::string json_string(const std::string& s)
{
    std::string r = "\"";
    for (unsigned char ch : s)
    {
        if (ch == '"' || ch == '\\') r += '\\', r += (char)ch;
        else if (ch < 0x20)
        {
            char buf[8];
            snprintf(buf, sizeof(buf), "\\u%04x", ch);
            r += buf;
        }
        else r += (char)ch;
    }
    return r + "\"";
}

// Four decimals by integer arithmetic: glibc's %f costs a value-dependent number
// of instructions (hundreds per digit), which the emulated instruction counts
// (benchmarks/arm_instructions.py) would see in every measured time printed.
std::string json_number(double v)
{
    if (!std::isfinite(v)) return "null";
    long long units = std::llround(std::fabs(v) * 10000.0);
    char buf[64];
    snprintf(buf, sizeof(buf), "%s%lld.%04lld", v < 0 && units ? "-" : "", units / 10000, units % 10000);
    return buf;
}

struct Extras
{
    LoadTimes load;
    double cold_ms = 0;
    double runs_wall_ms = 0; // from the cold run's start to the end of the last run
    long load_peak_rss_kb = 0, peak_rss_kb = 0;
    const Profile* profile = nullptr;
};

std::string profile_json(const Profile& p)
{
    double sum = 0;
    for (const LayerTime& t : p.layers) sum += t.ms;
    std::string s = "{\"runs\": " + std::to_string(p.runs) + ", \"run_ms\": " + json_number(p.run_ms) +
                    ", \"layers_ms\": " + json_number(sum) + ", \"layers\": [";
    for (size_t i = 0; i < p.layers.size(); i++)
    {
        const LayerTime& t = p.layers[i];
        char share[32];
        snprintf(share, sizeof(share), "%.5f", sum > 0 ? t.ms / sum : 0.0);
        s += std::string(i ? "," : "") + "\n    {\"name\": " + json_string(t.name) + ", \"type\": " +
             json_string(t.type) + ", \"ms\": " + json_number(t.ms) + ", \"share\": " + share + "}";
    }
    return s + "]}";
}

void print_json(const Options& o, const std::vector<double>& ms, const ncnn::Mat& out, const Extras& x)
{
    std::vector<double> sorted = ms;
    std::sort(sorted.begin(), sorted.end());
    const size_t n = sorted.size();

    // Stats are null when nothing was timed (--loops 0).
    auto stat = [&](double v) { return n ? json_number(v) : std::string("null"); };
    double mean = 0, var = 0;
    for (double v : ms) mean += v;
    if (n) mean /= (double)n;
    for (double v : ms) var += (v - mean) * (v - mean);
    // Population std: the runs are the whole sample we report on.
    double std_ms = n ? std::sqrt(var / (double)n) : 0;
    double median = n ? (n % 2 ? sorted[n / 2] : (sorted[n / 2 - 1] + sorted[n / 2]) / 2) : 0;
    // Nearest-rank p90: an actually observed time, no interpolation.
    double p90 = n ? sorted[(size_t)std::ceil(0.9 * (double)n) - 1] : 0;

    std::string times = "[";
    for (size_t i = 0; i < ms.size(); i++) times += (i ? ", " : "") + json_number(ms[i]);
    times += "]";

    std::string oshape = "null";
    if (!out.empty())
    {
        oshape = "[";
        std::vector<int> s = shape_of(out);
        for (size_t i = 0; i < s.size(); i++) oshape += (i ? ", " : "") + std::to_string(s[i]);
        oshape += "]";
    }

    printf("{\n");
    printf("  \"runner\": \"mfn-bench\",\n");
    printf("  \"runner_version\": %s,\n", json_string(MFN_BENCH_VERSION).c_str());
    printf("  \"ncnn_version\": %s,\n", json_string(NCNN_VERSION_STRING).c_str());
    printf("  \"options\": {\"param\": %s, \"bin\": %s, \"input\": %s, \"shape\": [%d, %d, %d], \"seed\": %llu, "
           "\"threads\": %d, \"powersave\": %d, \"warmup\": %d, \"loops\": %d, \"expect_dim\": %s, \"cooldown\": %s, \"fp16\": %s, "
           "\"dump\": %s, \"input_blob\": %s, \"output_blob\": %s, \"pace_ms\": %ld, \"profile\": %s},\n",
           json_string(o.param).c_str(), json_string(o.bin).c_str(),
           o.input.empty() ? "null" : json_string(o.input).c_str(), o.w, o.h, o.c, (unsigned long long)o.seed,
           o.threads, o.powersave, o.warmup, o.loops,
           o.expect_dim ? std::to_string(o.expect_dim).c_str() : "null", json_number(o.cooldown).c_str(), o.fp16 ? "true" : "false",
           o.dump.empty() ? "null" : json_string(o.dump).c_str(), json_string(o.input_blob).c_str(),
           json_string(o.output_blob).c_str(), o.pace_ms, o.profile ? "true" : "false");
    printf("  \"cpu_count\": %d,\n", ncnn::get_cpu_count());
    printf("  \"big_cpu_count\": %d,\n", ncnn::get_big_cpu_count());
    printf("  \"little_cpu_count\": %d,\n", ncnn::get_little_cpu_count());
    printf("  \"load_ms\": %s,\n", json_number(x.load.param_ms + x.load.bin_ms).c_str());
    printf("  \"load_ms_param\": %s,\n", json_number(x.load.param_ms).c_str());
    printf("  \"load_ms_bin\": %s,\n", json_number(x.load.bin_ms).c_str());
    printf("  \"cold_ms\": %s,\n", json_number(x.cold_ms).c_str());
    printf("  \"runs_wall_ms\": %s,\n", json_number(x.runs_wall_ms).c_str());
    printf("  \"load_peak_rss_kb\": %ld,\n", x.load_peak_rss_kb);
    printf("  \"peak_rss_kb\": %ld,\n", x.peak_rss_kb);
    printf("  \"times_ms\": %s,\n", times.c_str());
    printf("  \"min_ms\": %s,\n", stat(n ? sorted.front() : 0).c_str());
    printf("  \"median_ms\": %s,\n", stat(median).c_str());
    printf("  \"mean_ms\": %s,\n", stat(mean).c_str());
    printf("  \"p90_ms\": %s,\n", stat(p90).c_str());
    printf("  \"max_ms\": %s,\n", stat(n ? sorted.back() : 0).c_str());
    printf("  \"std_ms\": %s,\n", stat(std_ms).c_str());
    printf("  \"output_shape\": %s,\n", oshape.c_str());
    printf("  \"profile\": %s\n", x.profile ? profile_json(*x.profile).c_str() : "null");
    printf("}\n");
}

} // namespace

int main(int argc, char** argv)
{
    for (int sig : {SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGABRT})
        signal(sig, on_fatal_signal);

    const Options o = parse_args(argc, argv);

    // 0 keeps the inherited affinity (all cores unless the caller used
    // taskset); calling ncnn for it would also spawn a thread per core, which
    // makes emulated instruction counts noisier for no benefit.
    if (o.powersave != 0 && ncnn::set_cpu_powersave(o.powersave) != 0)
        die(1, "set_cpu_powersave(%d) failed on this device", o.powersave);

    // The pools make repeated runs reuse memory, as an app would; without them
    // each timed run would include malloc/free of every intermediate blob.
    ncnn::UnlockedPoolAllocator blob_pool;
    ncnn::PoolAllocator workspace_pool;

    ncnn::Net net;
    net.opt.num_threads = o.threads;
    net.opt.blob_allocator = &blob_pool;
    net.opt.workspace_allocator = &workspace_pool;
    net.opt.use_vulkan_compute = false;
    net.opt.use_fp16_storage = o.fp16;
    net.opt.use_fp16_arithmetic = o.fp16;
    net.opt.use_fp16_packed = o.fp16;
    // As export/backends.py and the app: bf16 stays off, so fp32 means fp32 everywhere.
    net.opt.use_bf16_storage = false;

    // Read the input before loading so a bad --input fails fast.
    const ncnn::Mat in = make_input(o);

    Extras x;
    x.load = load_model(net, o);
    x.load_peak_rss_kb = vm_kb("VmHWM");

    Pacer pacer(o.pace_ms);
    pacer.wait(); // the cold run is frame 0
    auto first = std::chrono::steady_clock::now();
    ncnn::Mat out; // the last run's output: the cold run's until another runs
    x.cold_ms = cold_run(net, o, in, out);

    // Let the SoC shed heat from loading (or a previous run) before measuring.
    if (o.cooldown > 0) std::this_thread::sleep_for(std::chrono::duration<double>(o.cooldown));

    for (int i = 0; i < o.warmup; i++)
    {
        pacer.wait();
        run_once(net, o, in, out);
    }

    std::vector<double> ms;
    ms.reserve((size_t)o.loops);
    for (int i = 0; i < o.loops; i++)
    {
        pacer.wait();
        ms.push_back(run_once(net, o, in, out));
    }

    Profile profile;
    if (o.profile)
    {
        profile = profile_runs(net, o, in, pacer);
        x.profile = &profile;
    }
    x.runs_wall_ms = ms_since(first);
    x.peak_rss_kb = vm_kb("VmHWM");

    if (!o.dump.empty()) dump_output(out, o.dump);
    print_json(o, ms, out, x);
    // Make sure a full pipe or closed stdout is reported, not silently lost.
    if (fflush(stdout) != 0 || ferror(stdout)) die(1, "cannot write to stdout: %s", strerror(errno));
    return 0;
}
