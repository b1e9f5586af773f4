# Nomad client configuration for polydev. Copy the polydev binary into the agent's plugin_dir
# (its file name must stay `polydev`: the plugin block below and `driver = "polydev"` use it).
#
#   nomad agent -dev -plugin-dir=/opt/nomad/plugins -config=nomad/agent.hcl
#
# Every option is shown at its default; uncomment a line to change it.

plugin "polydev" {
  config {
    # Docker engine to run task containers on (unix sockets only).
    # docker_endpoint = "unix:///var/run/docker.sock"

    # polydev's own state: log cursors and per-task log forwarder files (<data_dir>/logs).
    # data_dir = "/var/lib/polydev"

    # Tasks WITHOUT a user_id: take each provider's credential variables (OPENAI_API_KEY, ...)
    # from the agent's own environment, which Nomad passes to the plugin. One shared key.
    # credentials_from_env = true

    # Tasks WITH a user_id: take that user's credentials, registered for the job's namespace,
    # from the encrypted store in <data_dir>/credentials (`polydev credentials set ...`).
    # credentials_from_store = true

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

    # Isolation of task containers. Every container also runs as uid 1000 with all
    # capabilities dropped and no-new-privileges; privileged mode does not exist.
    # security {
    #   pids_limit           = 512    # processes per task container
    #   read_only_rootfs     = false  # mount the image read-only
    #   runtime              = ""     # OCI runtime, e.g. "runsc"; "" = Docker's default
    #   allow_image_override = false  # let jobspecs set `image`
    #   network_mode         = ""     # "bridge", "none" or "host"; "" = Docker's default bridge
    # }

    # Warm pool, per provider: idle containers started ahead of time so StartTask only claims
    # one (tens of ms instead of hundreds). target = 0 turns a provider's pool off.
    # pool "openai" {
    #   target             = 2       # idle containers kept ready
    #   max                = 32      # ceiling on this provider's containers (idle + running tasks)
    #   max_idle_age       = "1h"    # idle containers older than this are replaced
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
