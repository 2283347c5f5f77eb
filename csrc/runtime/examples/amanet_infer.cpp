// amanet_infer: DensePose on one image with the C++ runtime.
//
//   amanet_infer MODEL IMAGE OUT.png [--json OUT.json] [--threads N] [--runs N]
//                [--score-threshold T] [--device cpu|cuda] [--presized W0xH0]
//                [--save-input INPUT.png] [--min-size N] [--max-size N]
//                [--precision fp32|bf16|fp16|int8]
//
// MODEL: a TorchScript export (.ts) or an ONNX export (.onnx, run by OpenVINO on the CPU).
// Writes the whole-image IUV as an RGB PNG (R = I part 0..24, G = U, B = V, each 0..255, as
// `amanet predict` does), prints every person's box and score and the timing (median over
// --runs). --presized: IMAGE is already resized to the model input (e.g. by PIL, for bit-exact
// comparisons with Python); results are mapped to an original image of W0 x H0 pixels.
// --save-input: also write the resized model input (BGR PNG), to check the resize.
// --min-size / --max-size: override the export's resize (shortest edge, longest-edge cap).
// --runs 0: load the model and prepare the input (see --save-input), but do not predict.
// --precision: OpenVINO's compute precision for .onnx (default fp32, an int8 export: int8); a
// TorchScript export runs the precision it was exported in.
// Exit status: 0 ok, 1 error (message on stderr), 2 bad command line.
#include <amanet/predictor.h>

#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <string>
#include <vector>

namespace {

void usage(const char* argv0) {
  std::fprintf(stderr,
               "usage: %s MODEL IMAGE OUT.png [--json OUT.json] [--threads N] [--runs N]\n"
               "          [--score-threshold T] [--device cpu|cuda[:N]] [--presized W0xH0]\n"
               "          [--save-input INPUT.png] [--min-size N] [--max-size N]\n"
               "          [--precision fp32|bf16|fp16|int8]\n",
               argv0);
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

std::string json_escape(const std::string& s) {
  std::string out;
  for (char c : s) {
    if (c == '"' || c == '\\') out += '\\';
    if (static_cast<unsigned char>(c) < 0x20) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\u%04x", c);
      out += buf;
      continue;
    }
    out += c;
  }
  return out;
}

int parse_int(const std::string& flag, const std::string& value) {
  char* end = nullptr;
  long v = std::strtol(value.c_str(), &end, 10);
  if (value.empty() || *end != '\0' || v < 0 || v > 1 << 20)
    throw std::invalid_argument(flag + " expects a non-negative integer, got '" + value + "'");
  return static_cast<int>(v);
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string> positional;
  std::string json_path, presized, save_input;
  amanet::PredictorOptions options;
  int runs = 1;
  try {
    for (int i = 1; i < argc; ++i) {
      std::string a = argv[i];
      auto value = [&]() -> std::string {
        if (i + 1 >= argc) throw std::invalid_argument(a + " needs a value");
        return argv[++i];
      };
      if (a == "-h" || a == "--help") {
        usage(argv[0]);
        return 0;
      } else if (a == "--json") {
        json_path = value();
      } else if (a == "--threads") {
        options.threads = parse_int(a, value());
      } else if (a == "--runs") {
        runs = parse_int(a, value());
      } else if (a == "--score-threshold") {
        options.score_threshold = std::stof(value());
      } else if (a == "--device") {
        options.device = value();
      } else if (a == "--presized") {
        presized = value();
      } else if (a == "--min-size") {
        options.min_size = parse_int(a, value());
      } else if (a == "--max-size") {
        options.max_size = parse_int(a, value());
      } else if (a == "--save-input") {
        save_input = value();
      } else if (a == "--precision") {
        options.precision = value();
      } else if (a.size() > 1 && a[0] == '-') {
        throw std::invalid_argument("unknown option " + a);
      } else {
        positional.push_back(a);
      }
    }
    if (positional.size() != 3) throw std::invalid_argument("expected MODEL IMAGE OUT.png");
  } catch (const std::exception& e) {
    std::fprintf(stderr, "amanet_infer: %s\n", e.what());
    usage(argv[0]);
    return 2;
  }
  const std::string &model_path = positional[0], &image_path = positional[1], &out_path = positional[2];

  try {
    using Clock = std::chrono::steady_clock;
    cv::Mat image = amanet::read_image(image_path);  // first: a bad image fails fast
    auto t0 = Clock::now();
    amanet::Predictor predictor(model_path, options);
    const double load_ms = std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
    const amanet::ModelInfo& info = predictor.info();
    cv::Size original = image.size();
    if (!presized.empty()) {
      int w0 = 0, h0 = 0;
      if (std::sscanf(presized.c_str(), "%dx%d", &w0, &h0) != 2 || w0 <= 0 || h0 <= 0)
        throw amanet::Error("--presized expects W0xH0 (the original image size), got '" + presized + "'");
      original = cv::Size(w0, h0);
    }
    const cv::Size input = presized.empty() ? predictor.input_size(image.size()) : image.size();
    if (!save_input.empty()) {
      cv::Mat resized = input == image.size() ? image : amanet::resize_bilinear_antialias(image, input);
      if (!cv::imwrite(save_input, resized)) throw amanet::Error("cannot write " + save_input);
    }
    if (runs == 0) {
      std::printf("model   %s (%s, %s), input %dx%d -> %dx%d; --runs 0: not predicting\n", model_path.c_str(),
                  info.family.c_str(), info.backend.c_str(), original.width, original.height, input.width,
                  input.height);
      return 0;
    }

    std::vector<double> total_ms, pre_ms, inf_ms, post_ms;
    amanet::Prediction pred;
    for (int r = 0; r < runs; ++r) {
      auto t1 = Clock::now();
      pred = presized.empty() ? predictor.predict(image) : predictor.predict_resized(image, original);
      total_ms.push_back(std::chrono::duration<double, std::milli>(Clock::now() - t1).count());
      pre_ms.push_back(pred.timing.preprocess_ms);
      inf_ms.push_back(pred.timing.inference_ms);
      post_ms.push_back(pred.timing.postprocess_ms);
    }

    // The IUV PNG holds R = I, G = U, B = V: OpenCV writes BGR, so reverse the channels.
    cv::Mat iuv_file;
    cv::cvtColor(pred.iuv, iuv_file, cv::COLOR_RGB2BGR);
    if (!cv::imwrite(out_path, iuv_file)) throw amanet::Error("cannot write " + out_path);

    std::printf("model   %s (%s, %s %s), input %dx%d -> %dx%d, ops %s, malloc %s\n", model_path.c_str(),
                info.family.c_str(), info.backend.c_str(), info.precision.c_str(), original.width, original.height,
                input.width, input.height, amanet::ops_build_info().c_str(), amanet::memory_policy().c_str());
    std::printf("people  %zu\n", pred.people.size());
    for (size_t i = 0; i < pred.people.size(); ++i) {
      const amanet::Person& p = pred.people[i];
      std::printf("  %zu  box [%.2f, %.2f, %.2f, %.2f]  score %.4f  chart %dx%d at (%d, %d)\n", i, p.box.x1,
                  p.box.y1, p.box.x2, p.box.y2, p.score, p.iuv.cols, p.iuv.rows, p.chart_box.x, p.chart_box.y);
    }
    std::printf("timing  load %.1f ms; predict median of %d: %.1f ms (preprocess %.1f, model %.1f, "
                "postprocess %.1f); first %.1f ms\n",
                load_ms, runs, median(total_ms), median(pre_ms), median(inf_ms), median(post_ms), total_ms[0]);
    std::printf("wrote   %s\n", out_path.c_str());

    if (!json_path.empty()) {
      std::ofstream js(json_path);
      if (!js) throw amanet::Error("cannot write " + json_path);
      char buf[256];
      js << "{\"model\": \"" << json_escape(model_path) << "\", \"image\": \"" << json_escape(image_path)
         << "\", \"family\": \"" << info.family << "\", \"backend\": \"" << info.backend << "\",\n";
      js << " \"height\": " << pred.height << ", \"width\": " << pred.width << ", \"input_height\": "
         << input.height << ", \"input_width\": " << input.width << ", \"iuv_png\": \""
         << json_escape(out_path) << "\",\n \"people\": [";
      for (size_t i = 0; i < pred.people.size(); ++i) {
        const amanet::Person& p = pred.people[i];
        // %.9g: float32 values round-trip exactly.
        std::snprintf(buf, sizeof buf,
                      "%s\n  {\"box\": [%.9g, %.9g, %.9g, %.9g], \"score\": %.9g, \"class\": %lld, "
                      "\"chart_box\": [%d, %d, %d, %d]}",
                      i ? "," : "", p.box.x1, p.box.y1, p.box.x2, p.box.y2, p.score,
                      static_cast<long long>(p.class_id), p.chart_box.x, p.chart_box.y, p.chart_box.width,
                      p.chart_box.height);
        js << buf;
      }
      std::snprintf(buf, sizeof buf,
                    "],\n \"timing_ms\": {\"load\": %.3f, \"runs\": %d, \"median\": %.3f, \"first\": %.3f, "
                    "\"preprocess\": %.3f, \"model\": %.3f, \"postprocess\": %.3f}}\n",
                    load_ms, runs, median(total_ms), total_ms[0], median(pre_ms), median(inf_ms), median(post_ms));
      js << buf;
      if (!js) throw amanet::Error("cannot write " + json_path);
    }
    return 0;
  } catch (const amanet::Error& e) {
    std::fprintf(stderr, "amanet_infer: error: %s\n", e.what());
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "amanet_infer: unexpected error: %s\n", e.what());
    return 1;
  }
}
