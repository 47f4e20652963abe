// Test certificates made with the openssl command line in a fresh temp
// directory (removed with the fixture): a CA, a server certificate it signed
// for localhost and 127.0.0.1, a client certificate it signed, and a second
// CA that signed nothing of these (a wrong CA). Throws if openssl fails.
#pragma once

#include <stdlib.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <stdexcept>
#include <string>

namespace bulwark::testing {

class TlsCerts {
 public:
  TlsCerts() {
    char tmpl[] = "/tmp/bulwark-tls-XXXXXX";
    if (mkdtemp(tmpl) == nullptr) throw std::runtime_error("TlsCerts: mkdtemp failed");
    dir_ = tmpl;
    ca("ca");
    ca("other-ca");
    signed_by_ca("server", "localhost", "subjectAltName=DNS:localhost,IP:127.0.0.1");
    signed_by_ca("client", "bulwark-client", "extendedKeyUsage=clientAuth");
  }
  ~TlsCerts() {
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }
  TlsCerts(const TlsCerts&) = delete;
  TlsCerts& operator=(const TlsCerts&) = delete;

  // "<dir>/<name>.crt" or ".key": ca, other-ca, server, client.
  std::string crt(const std::string& name) const { return dir_ + "/" + name + ".crt"; }
  std::string key(const std::string& name) const { return dir_ + "/" + name + ".key"; }

 private:
  void run(const std::string& command) const {
    if (std::system(("cd " + dir_ + " && " + command + " >/dev/null 2>&1").c_str()) != 0) {
      throw std::runtime_error("TlsCerts: failed: " + command);
    }
  }
  void ca(const std::string& name) const {
    run("openssl req -x509 -newkey rsa:2048 -nodes -days 2 -keyout " + name + ".key -out " + name +
        ".crt -subj '/CN=bulwark test " + name + "'");
  }
  void signed_by_ca(const std::string& name, const std::string& cn, const std::string& ext) const {
    run("openssl req -newkey rsa:2048 -nodes -keyout " + name + ".key -out " + name + ".csr -subj '/CN=" + cn + "'");
    std::ofstream(dir_ + "/" + name + ".ext") << ext << "\n";
    run("openssl x509 -req -in " + name + ".csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 2 -out " + name +
        ".crt -extfile " + name + ".ext");
  }

  std::string dir_;
};

}  // namespace bulwark::testing
