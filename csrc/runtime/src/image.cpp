// Image input: file reading, type conversion and the resize, with the Python side's rules
// (amanet/data/image_io.py, amanet/data/transforms.py).
#include <amanet/predictor.h>

#include <torch/nn/functional/upsampling.h>

#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>

namespace amanet {
namespace {

std::string describe(const cv::Mat& m) {
  static const char* depths[] = {"8U", "8S", "16U", "16S", "32S", "32F", "64F", "16F"};
  int d = m.depth();
  return std::string("CV_") + (d >= 0 && d < 8 ? depths[d] : "?") + "C" + std::to_string(m.channels()) +
         " " + std::to_string(m.cols) + "x" + std::to_string(m.rows);
}

// uint16 -> uint8 as the Python side: (x * 255 + 32767) // 65535 (= round(x * 255 / 65535)).
cv::Mat to_8bit(const cv::Mat& m16) {
  cv::Mat out(m16.rows, m16.cols, CV_MAKETYPE(CV_8U, m16.channels()));
  const int n = m16.cols * m16.channels();
  for (int r = 0; r < m16.rows; ++r) {
    const uint16_t* s = m16.ptr<uint16_t>(r);
    uint8_t* d = out.ptr<uint8_t>(r);
    for (int i = 0; i < n; ++i) d[i] = static_cast<uint8_t>((uint32_t(s[i]) * 255u + 32767u) / 65535u);
  }
  return out;
}

// BGRA -> BGR composited over black, in float32 like image_io._pil_to_rgb_uint8:
// round(c * (a / 255)) with round-half-to-even.
cv::Mat composite_over_black(const cv::Mat& bgra) {
  cv::Mat out(bgra.rows, bgra.cols, CV_8UC3);
  for (int r = 0; r < bgra.rows; ++r) {
    const uint8_t* s = bgra.ptr<uint8_t>(r);
    uint8_t* d = out.ptr<uint8_t>(r);
    for (int c = 0; c < bgra.cols; ++c) {
      const float alpha = static_cast<float>(s[4 * c + 3]) / 255.0f;
      for (int k = 0; k < 3; ++k)
        d[3 * c + k] = static_cast<uint8_t>(std::nearbyint(static_cast<float>(s[4 * c + k]) * alpha));
    }
  }
  return out;
}

bool starts_with(const std::vector<uint8_t>& b, const char* magic, size_t n, size_t at = 0) {
  return b.size() >= at + n && std::memcmp(b.data() + at, magic, n) == 0;
}

}  // namespace

cv::Mat to_bgr8(const cv::Mat& image) {
  if (image.empty() || image.rows == 0 || image.cols == 0)
    throw Error("image is empty (0 pixels): check that it was read correctly");
  if (image.dims != 2)
    throw Error("expected a 2-D image, got a " + std::to_string(image.dims) + "-D cv::Mat");
  const int depth = image.depth(), ch = image.channels();
  if (depth != CV_8U && depth != CV_16U)
    throw Error("unsupported image type " + describe(image) +
                ": expected 8-bit or 16-bit unsigned (CV_8U/CV_16U); convert floats with "
                "m.convertTo(out, CV_8U, 255)");
  if (ch != 1 && ch != 3 && ch != 4)
    throw Error("unsupported image type " + describe(image) +
                ": expected 1 (gray), 3 (BGR) or 4 (BGRA) channels");
  cv::Mat m = depth == CV_16U ? to_8bit(image) : image;
  cv::Mat out;
  if (ch == 1)
    cv::cvtColor(m, out, cv::COLOR_GRAY2BGR);
  else if (ch == 4)
    cv::cvtColor(m, out, cv::COLOR_BGRA2BGR);  // arrays: alpha dropped (as the Python side)
  else
    out = m;
  return out;
}

cv::Mat read_image(const std::string& path) {
  namespace fs = std::filesystem;
  std::error_code ec;
  if (!fs::exists(path, ec)) throw Error("image not found: " + path);
  if (fs::is_directory(path, ec)) throw Error("expected an image file, got a directory: " + path);
  std::ifstream f(path, std::ios::binary);
  if (!f) throw Error("cannot open image file: " + path);
  std::vector<uint8_t> bytes((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  if (bytes.empty()) throw Error("image file is empty: " + path);

  const bool jpeg = starts_with(bytes, "\xFF\xD8\xFF", 3);
  if (jpeg) {
    // libjpeg decodes a truncated file with a warning and grey fill; PIL refuses it, so do we.
    // Entropy-coded data cannot hold FF D9: the end marker must be in the file.
    const size_t tail = std::min<size_t>(bytes.size(), 1 << 16);
    bool has_eoi = false;
    for (size_t i = bytes.size() - tail; i + 1 < bytes.size(); ++i)
      if (bytes[i] == 0xFF && bytes[i + 1] == 0xD9) {
        has_eoi = true;
        break;
      }
    if (!has_eoi) throw Error("corrupt or truncated image file " + path + ": JPEG end marker missing");
  }
  // Formats that may carry alpha are decoded unchanged (to composite it over black like the
  // Python side); the others with EXIF orientation applied.
  const bool maybe_alpha = starts_with(bytes, "\x89PNG", 4) || starts_with(bytes, "WEBP", 4, 8) ||
                           starts_with(bytes, "II*\0", 4) || starts_with(bytes, "MM\0*", 4);
  const int flags = maybe_alpha ? cv::IMREAD_UNCHANGED : (cv::IMREAD_ANYDEPTH | cv::IMREAD_COLOR);
  cv::Mat m;
  try {
    m = cv::imdecode(bytes, flags);
  } catch (const cv::Exception& e) {
    throw Error("corrupt or truncated image file " + path + ": " + e.what());
  }
  if (m.empty())
    throw Error("not an image file, or a corrupt one (OpenCV cannot decode it): " + path);
  if (m.depth() == CV_16U) m = to_8bit(m);
  if (m.depth() != CV_8U) throw Error("unsupported image file " + path + " (" + describe(m) + ")");
  if (m.channels() == 4) return composite_over_black(m);
  if (m.channels() == 2) {  // gray + alpha
    cv::Mat planes[2];
    cv::split(m, planes);
    cv::Mat bgra;
    cv::merge(std::vector<cv::Mat>{planes[0], planes[0], planes[0], planes[1]}, bgra);
    return composite_over_black(bgra);
  }
  return to_bgr8(m);
}

cv::Size resized_size(cv::Size image_size, int short_edge, int max_size) {
  // amanet/data/transforms.py:resized_shape, in the same double arithmetic.
  const double h = image_size.height, w = image_size.width;
  double scale = short_edge * 1.0 / std::min(h, w);
  double new_h, new_w;
  if (h < w) {
    new_h = short_edge;
    new_w = scale * w;
  } else {
    new_h = scale * h;
    new_w = short_edge;
  }
  if (std::max(new_h, new_w) > max_size) {
    scale = max_size * 1.0 / std::max(new_h, new_w);
    new_h = new_h * scale;
    new_w = new_w * scale;
  }
  return cv::Size(static_cast<int>(new_w + 0.5), static_cast<int>(new_h + 0.5));
}

cv::Mat resize_bilinear_antialias(const cv::Mat& bgr8, cv::Size size) {
  if (bgr8.type() != CV_8UC3 || bgr8.empty())
    throw Error("resize_bilinear_antialias expects a non-empty CV_8UC3 image, got " + describe(bgr8));
  if (size.width <= 0 || size.height <= 0)
    throw Error("resize target must be positive, got " + std::to_string(size.width) + "x" +
                std::to_string(size.height));
  if (size == bgr8.size()) return bgr8.clone();
  cv::Mat src = bgr8.isContinuous() ? bgr8 : bgr8.clone();
  at::Tensor t = torch::from_blob(src.data, {1, src.rows, src.cols, 3}, torch::kUInt8).permute({0, 3, 1, 2});
  namespace F = torch::nn::functional;
  at::Tensor out = F::interpolate(t, F::InterpolateFuncOptions()
                                         .size(std::vector<int64_t>{size.height, size.width})
                                         .mode(torch::kBilinear)
                                         .align_corners(false)
                                         .antialias(true));
  out = out.permute({0, 2, 3, 1}).contiguous();
  cv::Mat dst(size.height, size.width, CV_8UC3);
  std::memcpy(dst.data, out.data_ptr<uint8_t>(), static_cast<size_t>(out.numel()));
  return dst;
}

}  // namespace amanet
