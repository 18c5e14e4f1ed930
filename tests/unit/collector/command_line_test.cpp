// microseg-collector's command line: what an operator reads and the exit status.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <fstream>
#include <memory>
#include <optional>

#include "collector_testing.hpp"
#include "support/subprocess.hpp"
#include "test_pki.hpp"

namespace mseg::collector {
namespace {

using ::testing::HasSubstr;
using testing::TempDir;
using testing::TestPki;

class CollectorCommandLineTest : public ::testing::Test {
protected:
  void SetUp() override { ASSERT_FALSE(dir_.path().empty()); }

  mseg::testing::CommandResult run(const std::vector<std::string>& args) {
    std::vector<std::string> argv = {MSEG_COLLECTOR_BINARY};
    argv.insert(argv.end(), args.begin(), args.end());
    auto result = mseg::testing::runCommand(argv);
    EXPECT_TRUE(result.ok()) << result.error().message();
    return result ? *result : mseg::testing::CommandResult{-1, {}, {}};
  }

  std::string writeConfig(const std::string& text) {
    auto path = (dir_ / "collector.yaml").string();
    std::ofstream(path) << text;
    return path;
  }

  TempDir dir_;
};

TEST_F(CollectorCommandLineTest, PrintsEveryConfigurationProblemAndExitsWithTwo) {
  auto path = writeConfig("listen: 127.0.0.1:7443\noutputs: []\nverbose: true\n");

  auto result = run({"--config", path});

  EXPECT_EQ(result.status, 2);
  EXPECT_THAT(result.err, HasSubstr(path + ":1:1: error: configuration is missing required "
                                           "field `tls`"));
  EXPECT_THAT(result.err, HasSubstr(path + ":2:10: error: `outputs` must list at least one "
                                           "output"));
  EXPECT_THAT(result.err, HasSubstr(path + ":3:1: error: unknown field `verbose`"));
}

TEST_F(CollectorCommandLineTest, ExitsWithOneWhenItCannotStart) {
  auto path = writeConfig(
      "listen: 127.0.0.1:0\n"
      "tls: {cert: /nonexistent.crt, key: /nonexistent.key, client_ca: /nonexistent-ca.crt}\n"
      "state_dir: " +
      (dir_ / "state").string() +
      "\n"
      "outputs: [{type: ocsf_file, path: " +
      (dir_ / "flows.jsonl").string() + "}]\n");

  auto result = run({"--config", path});

  EXPECT_EQ(result.status, 1);
  EXPECT_THAT(result.err, HasSubstr("cannot start: open /nonexistent.crt: No such file"));
}

TEST_F(CollectorCommandLineTest, RefusesAMissingConfigFlag) {
  auto result = run({});

  EXPECT_EQ(result.status, 2);
  EXPECT_EQ(result.err, "microseg-collector: no configuration given: pass --config FILE\n");
}

TEST_F(CollectorCommandLineTest, RefusesAnUnknownLogLevel) {
  auto result = run({"--config", "x.yaml", "--log-level", "loud"});

  EXPECT_EQ(result.status, 2);
  EXPECT_THAT(result.err,
              HasSubstr("--log-level loud: expected trace, debug, info, warn or error"));
}

// --check-config checks the TLS files as the collector will use them, and the certificates'
// dates, so a configuration that passes also starts and handshakes. Certificates are made by
// scripts/certs.sh and openssl, once for the suite.
class CollectorCheckConfigTest : public CollectorCommandLineTest {
protected:
  static void SetUpTestSuite() {
    pki_dir_ = std::make_unique<TempDir>();
    auto pki = TestPki::create(pki_dir_->path());
    ASSERT_TRUE(pki) << pki.error().message();
    pki_.emplace(std::move(*pki));
  }
  static void TearDownTestSuite() {
    pki_.reset();
    pki_dir_.reset();
  }

  std::string configWith(const std::string& cert, const std::string& key, const std::string& ca,
                         const std::string& more_outputs = "") {
    return writeConfig("listen: 127.0.0.1:0\ntls: {cert: " + cert + ", key: " + key +
                       ", client_ca: " + ca + "}\noutputs:\n  - {type: ocsf_file, path: " +
                       (dir_ / "flows.jsonl").string() + "}\n" + more_outputs);
  }
  std::string serverCert() const { return pki_->server().cert.string(); }
  std::string serverKey() const { return pki_->server().key.string(); }
  std::string caCert() const { return pki_->caCert().string(); }
  std::string notPem() {
    auto path = (dir_ / "notes.txt").string();
    std::ofstream(path) << "this is the collector certificate, ask Bob\n";
    return path;
  }

  static inline std::unique_ptr<TempDir> pki_dir_;
  static inline std::optional<TestPki> pki_;
};

TEST_F(CollectorCheckConfigTest, PassesUsableCertificatesWithoutStarting) {
  auto path = configWith(serverCert(), serverKey(), caCert());

  auto result = run({"--config", path, "--check-config"});

  EXPECT_EQ(result.status, 0) << result.err;
  EXPECT_EQ(result.out, path + ": valid, 1 outputs\n");
}

TEST_F(CollectorCheckConfigTest, RefusesAKeyThatBelongsToAnotherCertificate) {
  const std::string other_key = pki_->agent("host-a").key.string();
  auto path = configWith(serverCert(), other_key, caCert());

  auto result = run({"--config", path, "--check-config"});

  EXPECT_EQ(result.status, 2);
  EXPECT_EQ(result.err, path + ": tls.key " + other_key +
                            " does not belong to the certificate in tls.cert " + serverCert() +
                            "\n");
  EXPECT_EQ(result.out, "");
}

TEST_F(CollectorCheckConfigTest, RefusesACaFileWithoutACertificate) {
  auto path = configWith(serverCert(), serverKey(), serverKey());

  auto result = run({"--config", path, "--check-config"});

  EXPECT_EQ(result.status, 2);
  EXPECT_EQ(result.err, path + ": tls.client_ca " + serverKey() + ": holds no PEM certificate\n");
}

TEST_F(CollectorCheckConfigTest, RefusesAnExpiredCertificateWithItsDate) {
  const auto expired = pki_->expiredAgent();
  auto path = configWith(expired.cert.string(), expired.key.string(), caCert());

  auto result = run({"--config", path, "--check-config"});

  EXPECT_EQ(result.status, 2);
  EXPECT_EQ(result.err, path + ": tls.cert " + expired.cert.string() +
                            ": expired on 2020-02-01 00:00:00 UTC\n");
}

TEST_F(CollectorCheckConfigTest, RefusesFilesThatAreNotPemOrMissing) {
  const std::string text = notPem();
  auto path = configWith(text, "/nonexistent.key", caCert());

  auto result = run({"--config", path, "--check-config"});

  EXPECT_EQ(result.status, 2);
  EXPECT_EQ(result.err, path + ": tls.cert " + text + ": holds no PEM certificate\n" + path +
                            ": tls.key /nonexistent.key: No such file or directory\n");
}

TEST_F(CollectorCheckConfigTest, ChecksTheTlsFilesOfSyslogOutputs) {
  const std::string text = notPem();
  auto path = configWith(serverCert(), serverKey(), caCert(),
                         "  - {type: syslog, name: siem, transport: tls, host: 198.18.0.7, "
                         "port: 6514, ca: " + text + "}\n");

  auto result = run({"--config", path, "--check-config"});

  EXPECT_EQ(result.status, 2);
  EXPECT_EQ(result.err, path + ": output siem ca " + text + ": holds no PEM certificate\n");
}

}  // namespace
}  // namespace mseg::collector
