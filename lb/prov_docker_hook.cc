// Until the Docker provisioner is linked in, --provisioner docker is refused with a clear message.
#include <string>

#include <uv.h>

#include "lb/config.h"
#include "lb/provisioner.h"

Provisioner* make_docker_provisioner(uv_loop_t*, const Config&, std::string* err) {
  *err = "--provisioner docker is not available in this build";
  return nullptr;
}
