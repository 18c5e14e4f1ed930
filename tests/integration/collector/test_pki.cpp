#include "test_pki.hpp"

#include <fstream>
#include <sstream>
#include <vector>

#include "support/subprocess.hpp"

namespace mseg::collector::testing {
namespace {

using mseg::testing::runChecked;

Status certsScript(const std::filesystem::path& dir, std::vector<std::string> args) {
  std::vector<std::string> argv = {"bash", MSEG_CERTS_SCRIPT, "--dir", dir.string()};
  argv.insert(argv.end(), args.begin(), args.end());
  return runChecked(argv);
}

// `openssl ca` needs a database directory and a configuration naming it; the extensions match
// what certs.sh gives an agent.
Status writeCaConfig(const std::filesystem::path& dir, const std::filesystem::path& ca_dir) {
  std::ofstream(dir / "index.txt").close();
  std::ofstream(dir / "serial") << "1000\n";
  std::filesystem::create_directories(dir / "newcerts");
  std::ofstream config(dir / "ca.cnf");
  config << "[ca]\ndefault_ca = test_ca\n"
         << "[test_ca]\n"
         << "database = " << (dir / "index.txt").string() << "\n"
         << "new_certs_dir = " << (dir / "newcerts").string() << "\n"
         << "serial = " << (dir / "serial").string() << "\n"
         << "certificate = " << (ca_dir / "ca.crt").string() << "\n"
         << "private_key = " << (ca_dir / "ca.key").string() << "\n"
         << "default_md = sha256\npolicy = any_name\nunique_subject = no\n"
         << "[any_name]\ncommonName = supplied\n"
         << "[agent]\nbasicConstraints = CA:FALSE\nkeyUsage = critical,digitalSignature\n"
         << "extendedKeyUsage = clientAuth\nsubjectAltName = DNS:host-a\n";
  config.close();
  if (!config) {
    return Error::fromErrno(errno, "write " + (dir / "ca.cnf").string());
  }
  return {};
}

Status makeExpiredAgent(const std::filesystem::path& dir, const std::filesystem::path& ca_dir) {
  std::filesystem::create_directories(dir);
  if (auto written = writeCaConfig(dir, ca_dir); !written) {
    return written;
  }
  std::string key = (dir / "agent-host-a.key").string();
  std::string csr = (dir / "agent-host-a.csr").string();
  const std::vector<std::vector<std::string>> commands = {
      {"openssl", "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out",
       key},
      {"openssl", "req", "-new", "-key", key, "-subj", "/CN=host-a", "-out", csr},
      {"openssl", "ca", "-batch", "-config", (dir / "ca.cnf").string(), "-extensions", "agent",
       "-startdate", "20200101000000Z", "-enddate", "20200201000000Z", "-notext", "-in", csr,
       "-out", (dir / "agent-host-a.crt").string()},
  };
  for (const auto& command : commands) {
    if (auto ran = runChecked(command); !ran) {
      return ran;
    }
  }
  return {};
}

}  // namespace

std::string readPem(const std::filesystem::path& path) {
  std::ifstream file(path);
  std::stringstream text;
  text << file.rdbuf();
  return text.str();
}

Result<TestPki> TestPki::create(const std::filesystem::path& dir) {
  auto main_dir = dir / "main";
  auto rogue_dir = dir / "rogue";
  const std::vector<std::pair<std::filesystem::path, std::vector<std::string>>> steps = {
      {main_dir, {"ca"}},
      {main_dir, {"collector", "localhost", "127.0.0.1", "::1"}},
      {main_dir, {"agent", "host-a", "host-b"}},
      {rogue_dir, {"ca"}},
      {rogue_dir, {"agent", "host-a"}},
  };
  for (const auto& [where, args] : steps) {
    if (auto made = certsScript(where, args); !made) {
      return made.error().wrap("test certificates");
    }
  }
  if (auto made = makeExpiredAgent(dir / "expired", main_dir); !made) {
    return made.error().wrap("expired test certificate");
  }
  return TestPki(dir);
}

}  // namespace mseg::collector::testing
