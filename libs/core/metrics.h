// A small metrics registry rendered in the Prometheus text exposition format
// (version 0.0.4). Metrics live as long as the registry; the references that
// Get* return stay valid, so hot paths look a series up once and keep it.
//
//   auto& served = sb::metrics::Default().GetCounter(
//       "sb_requests_total", "Requests served", {{"route", "/v1/messages"}});
//   served.Inc();
#pragma once

#include <atomic>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

namespace sb::metrics {

using Labels = std::vector<std::pair<std::string, std::string>>;

class Counter {
 public:
  void Inc(double v = 1);
  double Value() const { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<double> value_{0};
};

class Gauge {
 public:
  void Set(double v) { value_.store(v, std::memory_order_relaxed); }
  void Add(double v);
  double Value() const { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<double> value_{0};
};

class Histogram {
 public:
  explicit Histogram(std::vector<double> bounds);
  void Observe(double v);
  // Cumulative counts per bound, then the +Inf count.
  std::vector<uint64_t> CumulativeCounts() const;
  double Sum() const;
  const std::vector<double>& bounds() const { return bounds_; }

 private:
  std::vector<double> bounds_;
  std::unique_ptr<std::atomic<uint64_t>[]> counts_;  // bounds_.size() + 1
  std::atomic<double> sum_{0};
};

// Default buckets for latencies in seconds.
std::vector<double> LatencyBuckets();

class Registry {
 public:
  // Same name and labels -> same series. A name reused with another type is
  // a programming error and aborts.
  Counter& GetCounter(const std::string& name, const std::string& help, const Labels& labels = {});
  Gauge& GetGauge(const std::string& name, const std::string& help, const Labels& labels = {});
  Histogram& GetHistogram(const std::string& name, const std::string& help,
                          const Labels& labels = {}, std::vector<double> bounds = LatencyBuckets());

  std::string Render() const;

 private:
  enum class Type { kCounter, kGauge, kHistogram };
  struct Family {
    Type type;
    std::string help;
    // Keyed by the rendered label set, e.g. `method="GET",code="200"`.
    std::map<std::string, std::unique_ptr<Counter>> counters;
    std::map<std::string, std::unique_ptr<Gauge>> gauges;
    std::map<std::string, std::unique_ptr<Histogram>> histograms;
  };
  Family& FamilyFor(const std::string& name, const std::string& help, Type type);

  mutable std::mutex mu_;
  std::map<std::string, Family> families_;
};

// The process-wide registry served at /metrics.
Registry& Default();

// `a="x",b="y"` with label values escaped as the format requires.
std::string RenderLabels(const Labels& labels);

}  // namespace sb::metrics
