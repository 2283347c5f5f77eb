// The README's C++ usage example (compiled and run by tests/test_cpp.py).
#include <amanet/predictor.h>

#include <cstdio>

int main(int argc, char** argv) {
  if (argc != 3) return std::fprintf(stderr, "usage: %s MODEL.ts IMAGE\n", argv[0]), 2;
  try {
    amanet::PredictorOptions options;
    options.threads = 2;
    options.score_threshold = 0.5f;  // post-filter on the export's detections
    amanet::Predictor predictor(argv[1], options);
    amanet::Prediction p = predictor.predict(amanet::read_image(argv[2]));  // or any BGR cv::Mat
    for (const amanet::Person& person : p.people) {
      const cv::Mat& iuv = person.iuv;  // CV_8UC3: I (part 0..24), U, V (0..255)
      int parts = 0;
      for (int y = 0; y < iuv.rows; ++y)
        for (int x = 0; x < iuv.cols; ++x) parts += iuv.at<cv::Vec3b>(y, x)[0] > 0;
      std::printf("person box [%.1f %.1f %.1f %.1f] score %.3f, %d body pixels at (%d, %d)\n", person.box.x1,
                  person.box.y1, person.box.x2, person.box.y2, person.score, parts, person.chart_box.x,
                  person.chart_box.y);
    }
    std::printf("%zu people, whole-image IUV %dx%d\n", p.people.size(), p.iuv.cols, p.iuv.rows);
  } catch (const amanet::Error& e) {  // missing model, not an export, bad image, ...
    return std::fprintf(stderr, "error: %s\n", e.what()), 1;
  }
}
