# Nomad client configuration for polydev. Copy the polydev binary into the agent's plugin_dir
# (its file name must stay `polydev`: the plugin block below and `driver = "polydev"` use it).
#
#   nomad agent -dev -plugin-dir=/opt/nomad/plugins -config=nomad/agent.hcl
#
# Every option is shown at its default; uncomment a line to change it.
#
# Installed as /etc/nomad.d/polydev.hcl next to the client's own configuration, with the
# systemd unit nomad/nomad-client.service.

# Nomad passes its own environment to every exec, raw_exec and java task (minus this list) and
# keeps the task's environment in its client state. If provider keys live in the agent's
# environment (credentials_from_env below), they must be on the list. Setting the option
# replaces Nomad's default list, so the list starts with Nomad 1.6's defaults. (Image-based
# drivers such as docker and polydev never pass the host environment on.)
client {
  options = {
    "env.denylist" = "CONSUL_TOKEN,CONSUL_HTTP_TOKEN,VAULT_TOKEN,NOMAD_LICENSE,AWS_ACCESS_KEY_ID,AWS_SECRET_ACCESS_KEY,AWS_SESSION_TOKEN,GOOGLE_APPLICATION_CREDENTIALS,OPENAI_API_KEY,ANTHROPIC_API_KEY,GOOGLE_API_KEY,GEMINI_API_KEY,GOOGLE_PROJECT_ID"
  }
}

plugin "polydev" {
  config {
    # Docker engine to run task containers on (unix sockets only).
    # docker_endpoint = "unix:///var/run/docker.sock"

    # polydev's own state: log cursors and per-task log forwarder files (<data_dir>/logs).
    # data_dir = "/var/lib/polydev"

    # Tasks WITHOUT a user_id get the node's shared key: first the store's shared entry
    # (`polydev credentials set --shared --provider openai`, the recommended home), else each
    # provider's variables (OPENAI_API_KEY, ...) from the agent's own environment, which Nomad
    # passes to the plugin. false: the environment is never read (keep the store's entry).
    # credentials_from_env = true

    # The encrypted store in <data_dir>/credentials (`polydev credentials set ...`): tasks WITH
    # a user_id take that user's credentials registered for the job's namespace, and only
    # those; tasks without one take its shared entry. false: the store is never read.
    # credentials_from_store = true

    # The store's sealing key, kept apart from the entries it seals (0600, in a directory only
    # root can write; never inside <data_dir>/credentials). `polydev credentials set --key-file`.
    # credentials_key_file = "/etc/polydev/credentials.key"

    # Users' keys from one Vault / OpenBao for every node (KV v2), asked before the local store.
    # Entries: <mount>/<path_prefix>/<nomad namespace>/<user_id>/<provider>, keys named like
    # the provider's variables; the token needs `read` on <mount>/data/<path_prefix>/*.
    # vault {
    #   address         = "https://vault.service.consul:8200"
    #   mount           = "secret"
    #   path_prefix     = "polydev"
    #   token_file      = "/etc/polydev/vault-token"   # root-only; or the approle block below
    #   # approle {
    #   #   role_id_file   = "/etc/polydev/role-id"
    #   #   secret_id_file = "/etc/polydev/secret-id"
    #   #   mount          = "approle"
    #   # }
    #   ca_file         = ""       # extra CA certificates (PEM) for the server
    #   namespace       = ""       # Vault Enterprise / OpenBao namespace
    #   cache_ttl       = "30s"    # a rotation or deletion reaches running tasks within this
    #   stale_if_error  = "5m"     # how long past cache_ttl a cached entry serves while Vault is down
    #   request_timeout = "10s"
    # }

    # Task containers that no task claims back after a restart are removed after this long.
    # orphan_grace = "10m"

    # Do not forward task output to Nomad (`nomad alloc logs` stays empty).
    # disable_log_collection = false

    # The three built-in providers; a block overrides only the fields it sets. Other names add
    # a CLI of your own (then `image` and `command` are required).
    # provider "openai" {
    #   image                = "polydev-openai-runtime:latest"
    #   command              = "codex"
    #   credentials          = ["OPENAI_API_KEY"]
    #   optional_credentials = []
    #   # "broker": the key stays with polydev and the container has no network; the CLI
    #   # reaches its API through polydev's broker. "env": the key is in the CLI's environment
    #   # (weaker; the container gets security.network_mode).
    #   credential_mode      = "broker"
    #   api_upstream         = "https://api.openai.com"   # https:// only; a path prefix is kept
    #   upstream_ca_file     = ""                          # extra CA certificates (PEM)
    #   api_auth             = "bearer"                    # bearer | x-api-key | x-goog-api-key | query-key
    # }
    # (anthropic: api_upstream "https://api.anthropic.com", api_auth "x-api-key";
    #  google: "https://generativelanguage.googleapis.com", "x-goog-api-key")
    # A CLI of your own in broker mode also says where it reads its API address:
    # provider "aider" {
    #   image = "aider:latest", command = "aider", credentials = ["OPENAI_API_KEY"]
    #   credential_mode = "broker", api_upstream = "https://api.openai.com", api_auth = "bearer"
    #   base_url_env = ["OPENAI_API_BASE"], base_url_path = "/v1"
    # }
    # provider "anthropic" {
    #   image                = "polydev-anthropic-runtime:latest"
    #   command              = "claude"
    #   credentials          = ["ANTHROPIC_API_KEY"]
    #   optional_credentials = []
    # }
    # provider "google" {
    #   image                = "polydev-google-runtime:latest"
    #   command              = "gemini"
    #   credentials          = ["GOOGLE_API_KEY"]
    #   optional_credentials = ["GOOGLE_PROJECT_ID"]
    # }

    # Isolation of task containers. Every container also runs with all capabilities dropped
    # and no-new-privileges; privileged mode does not exist.
    # security {
    #   pids_limit           = 512    # processes per task container
    #   read_only_rootfs     = false  # mount the image read-only
    #   runtime              = ""     # OCI runtime, e.g. "runsc"; "" = Docker's default
    #   allow_image_override = false  # let jobspecs set `image`
    #   network_mode         = ""     # env-mode providers only: "bridge", "none" or "host";
    #                                 # "" = Docker's default bridge (broker mode: always none)
    #   task_uid             = 2100000000  # uid and gid tasks run as: ids no host account or
    #   task_gid             = 2100000000  # group may have (checked at start; see the README)
    # }

    # The per-task credential broker's limits.
    # broker {
    #   max_header_bytes = 65536      # request line + headers; more gets 431
    #   max_body_bytes   = 33554432   # one request body; more gets 413
    #   connect_timeout  = "10s"      # to the API (and to egress destinations)
    #   upstream_timeout = "10m"      # until the API answers, and between pieces of its answer
    #   client_timeout   = "30s"      # for a client to send its headers; idle connections too
    #   request_body_timeout = "30s"  # total wait for a client to send a body; then 408
    #   max_connections  = 64         # open connections per task, CONNECT tunnels included;
    #                                 # each task reserves 8 + 3 x this of the plugin's open files
    #   tunnel_idle_timeout = "5m"    # a CONNECT tunnel with no byte either way is closed
    # }

    # Destinations broker-mode tasks may reach besides their API (an HTTP CONNECT proxy at the
    # broker's address; the tasks get HTTPS_PROXY). Empty: the provider's API alone.
    # egress {
    #   allow = ["registry.npmjs.org:443"]
    # }

    # Warm pool, per provider: idle containers started ahead of time so StartTask only claims
    # one (tens of ms instead of hundreds). target = 0 turns a provider's pool off.
    # pool "openai" {
    #   target             = 2       # idle containers kept ready
    #   max                = 32      # ceiling on this provider's containers (idle + running tasks)
    #   max_idle_age       = "1h"    # idle containers older than this are replaced
    #   scale_down_after   = "5m"    # a burst that ran the pool dry is remembered this long (the
    #                                # pool grows towards it, up to max); idle containers above
    #                                # target older than this are removed, oldest first
    #   refill_parallelism = 2       # containers created at once while refilling
    #   idle_cpus          = 0.1     # CPU of an idle container (cores); a claim raises it
    #   idle_memory        = 256     # memory of an idle container (MB); a claim sets the task's
    #   when_empty         = "cold"  # "cold": start one on the spot; "wait": up to wait_timeout;
    #                                # "fail": a retryable error (Nomad retries the task)
    #   wait_timeout       = "30s"
    # }
    # (the same defaults apply to pool "anthropic" and pool "google")

    # Rotation of each task container's log in Docker (the `local` log driver).
    # container_log {
    #   max_size  = "100m"
    #   max_files = 3
    # }
  }
}
