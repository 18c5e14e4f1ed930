// What a start of the agent finds before it begins, so that a start that fails removes what it
// created and nothing else. Pins a previous agent left must stay: they keep enforcing, and the
// next agent adopts them.
#pragma once

#include <set>
#include <string>
#include <vector>

namespace mseg::agent {

class StartFootprint {
public:
  // Notes, before the start touches anything, which of `paths` exist (files or directories the
  // start may create: the flow log, the spool, the state directory, in that order) and the
  // entries of `pin_dir`. A path's missing parents count as created along with it.
  static StartFootprint take(const std::string& pin_dir, const std::vector<std::string>& paths);

  // Removes each path that did not exist, with its content, and its parents that did not exist
  // once they are empty. Returns the paths removed.
  std::vector<std::string> removeCreatedPaths() const;

  // Removes the pins of the pin directory that were not there, links first (a link whose pin
  // is gone detaches its program once its last descriptor closes), then the pin directory and
  // its parents when they were not there and are empty. Returns the pins removed. Call only
  // while holding the pin directory's lock: pins another agent makes meanwhile would look new.
  std::vector<std::string> removeCreatedPins() const;

private:
  struct Place {
    std::string path;
    bool existed = false;
    std::string existing_ancestor;  // the nearest one that existed, maybe the path itself
  };
  static Place placeOf(const std::string& path);
  // Removes the parents of `place.path` up to its existing ancestor, while they are empty.
  static void removeCreatedParents(const Place& place);

  Place pin_dir_;
  std::set<std::string> pins_;  // entries of the pin directory
  std::vector<Place> paths_;
};

}  // namespace mseg::agent
