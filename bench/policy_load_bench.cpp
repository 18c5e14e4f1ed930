// How long loading a 100,000-rule policy takes as one file and as a directory of files, and
// what a reload costs after one file changed: read, parse (with the merge) and the merge alone.
// Prints a table; not a test. Writes only into a temporary directory it removes.
//
// usage: policy_load_bench [RULES [FILES [RUNS]]]   (default: 100000 100 5)
#include <fmt/format.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <string>
#include <vector>

#include "mseg/policy/source.hpp"

namespace fs = std::filesystem;
using mseg::policy::Diagnostics;
using mseg::policy::LoadTimes;
using mseg::policy::PolicySource;

namespace {

using Clock = std::chrono::steady_clock;

double ms(std::chrono::nanoseconds duration) { return duration.count() / 1e6; }

// The shape of bench/gen_policy.py: one client workload reaching N/100 inventory peers, one TCP
// port per rule; the rules of segment `s<f>` go to file f.
std::string header(int rules) {
  int peers = std::max(1, rules / 100);
  std::string text = "version: 1\nworkloads:\n";
  text += "  - name: client\n    cgroup: client.service\n    labels: {role: client}\n";
  text += "  - name: server\n    cgroup: server.service\n    labels: {role: server}\n";
  text += "inventory:\n";
  text += "  - name: client-host\n    cidrs: [198.18.90.1/32]\n    labels: {role: client}\n";
  for (int peer = 0; peer < peers; ++peer) {
    text += fmt::format("  - name: peer-{}\n    cidrs: [198.19.{}.{}/32]\n", peer, peer / 250,
                        peer % 250 + 1);
    text += fmt::format("    labels: {{role: server, peer: p{}}}\n", peer);
  }
  return text;
}

std::string segment(int file, int first_rule, int rules, int total_rules, int port_offset) {
  int peers = std::max(1, total_rules / 100);
  std::string text = fmt::format("  - name: s{}\n    rules:\n", file);
  for (int rule = first_rule; rule < first_rule + rules; ++rule) {
    text += fmt::format("      - name: r{}\n        from: {{role: client}}\n", rule);
    text += fmt::format("        to: {{peer: p{}}}\n        protocol: tcp\n", rule % peers);
    text += fmt::format("        ports: [{}]\n", 1024 + (rule + port_offset) % 60000);
  }
  return text;
}

void writeFile(const fs::path& path, const std::string& text) {
  fs::path temporary = path.parent_path() / ("." + path.filename().string() + ".tmp");
  std::ofstream(temporary) << text;
  fs::rename(temporary, path);
}

std::string segmentFile(int file, int rules_per_file, int rules, int port_offset) {
  return "version: 1\nsegments:\n" +
         segment(file, file * rules_per_file, rules_per_file, rules, port_offset);
}

struct Sample {
  LoadTimes times;
  std::chrono::nanoseconds cpu{};  // user and system time of all threads
  size_t parsed = 0;
};

std::chrono::nanoseconds processCpuTime() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  auto ns = [](const timeval& t) {
    return std::chrono::seconds(t.tv_sec) + std::chrono::microseconds(t.tv_usec);
  };
  return ns(usage.ru_utime) + ns(usage.ru_stime);
}

// The median run by read + parse.
Sample median(std::vector<Sample> samples) {
  std::sort(samples.begin(), samples.end(), [](const Sample& a, const Sample& b) {
    return a.times.read + a.times.parse < b.times.read + b.times.parse;
  });
  return samples[samples.size() / 2];
}

Sample load(PolicySource& source) {
  Diagnostics out;
  Sample sample;
  auto cpu_before = processCpuTime();
  auto policy = source.load(out, &sample.times);
  sample.cpu = processCpuTime() - cpu_before;
  if (!policy) {
    std::fprintf(stderr, "load failed: %s\n%s", policy.error().message().c_str(),
                 out.format().c_str());
    std::exit(1);
  }
  sample.parsed = source.lastLoad().parsed;
  return sample;
}

void row(const char* what, const Sample& sample) {
  std::printf("| %-30s | %7.1f | %8.1f | %8.1f | %8.1f | %6zu |\n", what, ms(sample.times.read),
              ms(sample.times.parse), ms(sample.times.read + sample.times.parse), ms(sample.cpu),
              sample.parsed);
}

}  // namespace

int main(int argc, char** argv) {
  int rules = argc > 1 ? std::atoi(argv[1]) : 100000;
  int files = argc > 2 ? std::atoi(argv[2]) : 100;
  int runs = argc > 3 ? std::atoi(argv[3]) : 5;
  if (rules < files || files < 1 || runs < 1) {
    std::fprintf(stderr, "usage: policy_load_bench [RULES [FILES [RUNS]]]\n");
    return 2;
  }
  int rules_per_file = rules / files;
  rules = rules_per_file * files;

  char pattern[] = "/tmp/mseg-load-bench.XXXXXX";
  if (mkdtemp(pattern) == nullptr) {
    std::perror("mkdtemp");
    return 1;
  }
  fs::path work = pattern;
  fs::path single = work / "policy.yaml";
  fs::path directory = work / "policy.d";
  fs::create_directory(directory);

  std::string whole = header(rules) + "segments:\n";
  writeFile(directory / "000-identities.yaml", header(rules));
  for (int file = 0; file < files; ++file) {
    whole += segment(file, file * rules_per_file, rules_per_file, rules, 0);
    writeFile(directory / fmt::format("{:03}-rules.yaml", file + 1),
              segmentFile(file, rules_per_file, rules, 0));
  }
  writeFile(single, whole);

  std::vector<Sample> one_file;
  std::vector<Sample> whole_directory;
  std::vector<Sample> one_changed;
  for (int run = 0; run < runs; ++run) {
    PolicySource file_source(single.string());
    one_file.push_back(load(file_source));

    // Trusting a stat at once: the files were written moments ago, and the default would
    // read them all again on the next load to be sure.
    PolicySource directory_source(directory.string(), std::chrono::nanoseconds(0));
    whole_directory.push_back(load(directory_source));
    writeFile(directory / "050-rules.yaml", segmentFile(49, rules_per_file, rules, run + 1));
    one_changed.push_back(load(directory_source));
  }

  std::printf(
      "%d rules: one file of %.1f MB, or %d files of %d rules and one of identities; "
      "median of %d runs, ms (cpu: all threads)\n\n",
      rules, fs::file_size(single) / 1e6, files, rules_per_file, runs);
  std::printf("| %-30s | %7s | %8s | %8s | %8s | %6s |\n", "load", "read", "parse", "total", "cpu",
              "parsed");
  std::printf("|%s|%s|%s|%s|%s|%s|\n", std::string(32, '-').c_str(), std::string(9, '-').c_str(),
              std::string(10, '-').c_str(), std::string(10, '-').c_str(),
              std::string(10, '-').c_str(), std::string(8, '-').c_str());
  row("one file", median(one_file));
  row("directory, first load", median(whole_directory));
  row("directory, one file changed", median(one_changed));

  // The merge alone, as the reload above runs it: 101 files, one of them new.
  Diagnostics out;
  std::vector<std::shared_ptr<const mseg::policy::PolicyFile>> parsed;
  PolicySource source(directory.string(), std::chrono::nanoseconds(0));
  auto policy = source.load(out);
  std::vector<double> merge_us;
  std::vector<double> full_merge_us;
  for (int run = 0; run < std::max(runs, 20); ++run) {
    auto files_now = policy->files;
    auto changed = mseg::policy::parsePolicyFile(segmentFile(49, rules_per_file, rules, run + 7),
                                                 (directory / "050-rules.yaml").string(), out);
    files_now[50] = *changed;
    auto start = Clock::now();
    auto merged = mseg::policy::mergePolicyFiles(files_now, directory.string(), out, &*policy);
    merge_us.push_back(ms(Clock::now() - start) * 1000);
    start = Clock::now();
    auto full = mseg::policy::mergePolicyFiles(files_now, directory.string(), out);
    full_merge_us.push_back(ms(Clock::now() - start) * 1000);
    if (!merged || !full) {
      std::fprintf(stderr, "merge failed:\n%s", out.format().c_str());
      return 1;
    }
  }
  std::sort(merge_us.begin(), merge_us.end());
  std::sort(full_merge_us.begin(), full_merge_us.end());
  std::printf(
      "\nmerge of %zu files, one changed: %.0f us with the previous policy, %.0f us "
      "checking every rule (median of %zu)\n",
      policy->files.size(), merge_us[merge_us.size() / 2], full_merge_us[full_merge_us.size() / 2],
      merge_us.size());
  fs::remove_all(work);
  return 0;
}
