#include "core/signals.hpp"

#include <csignal>

namespace hpcml {

namespace {
volatile std::sig_atomic_t g_signal = 0;
extern "C" void on_stop_signal(int signal) { g_signal = signal; }
}  // namespace

void install_stop_handlers() {
  struct sigaction action {};
  action.sa_handler = on_stop_signal;
  sigemptyset(&action.sa_mask);
  action.sa_flags = SA_RESTART;
  sigaction(SIGUSR1, &action, nullptr);
  sigaction(SIGTERM, &action, nullptr);
}

int stop_signal() { return g_signal; }

}  // namespace hpcml
