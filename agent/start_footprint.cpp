#include "start_footprint.hpp"

#include <unistd.h>

#include <algorithm>
#include <filesystem>

namespace mseg::agent {
namespace {

namespace fs = std::filesystem;

// Whether a pin is a link: links go first, so no program stays attached with its maps gone.
bool isLink(const std::string& name) { return name.rfind("link_", 0) == 0; }

}  // namespace

StartFootprint::Place StartFootprint::placeOf(const std::string& path) {
  Place place{path, false, ""};
  std::error_code err;
  place.existed = fs::exists(fs::symlink_status(path, err));
  fs::path ancestor = fs::path(path).lexically_normal();
  while (!ancestor.empty() && ancestor != ancestor.root_path() &&
         !fs::exists(fs::symlink_status(ancestor, err))) {
    ancestor = ancestor.parent_path();
  }
  place.existing_ancestor = ancestor.string();
  return place;
}

StartFootprint StartFootprint::take(const std::string& pin_dir,
                                    const std::vector<std::string>& paths) {
  StartFootprint footprint;
  footprint.pin_dir_ = placeOf(pin_dir);
  std::error_code err;
  for (auto it = fs::directory_iterator(pin_dir, err); !err && it != fs::directory_iterator();
       it.increment(err)) {
    footprint.pins_.insert(it->path().filename().string());
  }
  for (const auto& path : paths) {
    footprint.paths_.push_back(placeOf(path));
  }
  return footprint;
}

void StartFootprint::removeCreatedParents(const Place& place) {
  const fs::path stop = fs::path(place.existing_ancestor);
  for (fs::path parent = fs::path(place.path).lexically_normal().parent_path();
       !parent.empty() && parent != stop && parent != parent.root_path();
       parent = parent.parent_path()) {
    if (::rmdir(parent.c_str()) != 0) {
      return;  // not empty: something else lives there now
    }
  }
}

std::vector<std::string> StartFootprint::removeCreatedPaths() const {
  std::vector<std::string> removed;
  for (const auto& place : paths_) {
    std::error_code err;
    if (place.existed || !fs::exists(fs::symlink_status(place.path, err))) {
      continue;
    }
    if (fs::remove_all(place.path, err) > 0 && !err) {
      removed.push_back(place.path);
    }
    removeCreatedParents(place);
  }
  return removed;
}

std::vector<std::string> StartFootprint::removeCreatedPins() const {
  std::vector<std::string> created;
  std::error_code err;
  for (auto it = fs::directory_iterator(pin_dir_.path, err); !err && it != fs::directory_iterator();
       it.increment(err)) {
    const std::string name = it->path().filename().string();
    if (!pins_.count(name)) {
      created.push_back(name);
    }
  }
  std::stable_partition(created.begin(), created.end(), isLink);
  std::vector<std::string> removed;
  for (const auto& name : created) {
    if (fs::remove(fs::path(pin_dir_.path) / name, err)) {
      removed.push_back(name);
    }
  }
  if (!pin_dir_.existed && ::rmdir(pin_dir_.path.c_str()) == 0) {
    removeCreatedParents(pin_dir_);
  }
  return removed;
}

}  // namespace mseg::agent
