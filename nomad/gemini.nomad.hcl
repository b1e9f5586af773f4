# A user sends a request, a CLI runs for them: the Nomad-native form is a parameterized batch job.
#
#   nomad job run nomad/gemini.nomad.hcl
#   nomad job dispatch -meta user_id=user_123 -meta prompt="Write a hello world function" gemini
#   nomad job status gemini                      # find the dispatched job, then:
#   nomad alloc logs <alloc-id> gemini           # the CLI's output
#
# polydev injects the google credentials of (this job's namespace, user_id) itself; nothing secret
# is written here. The task runs as the node's task user (security.task_uid, 2100000000 by
# default) in a one-shot container whose PID 1 is `gemini`.
job "gemini" {
  type = "batch"

  parameterized {
    meta_required = ["user_id", "prompt"]
  }

  group "cli" {
    # Prefer a node whose warm pool of this provider has an idle container: the task then
    # starts in a container that is already running. Only a preference: with none warm, any
    # node with polydev takes it (cold). The attribute is the node's fingerprint, a few seconds
    # old at most. Compared as a number or as a string, every count from 1 up passes ">=" "1".
    affinity {
      attribute = "${attr.driver.polydev.pool.google.idle}"
      operator  = ">="
      value     = "1"
      weight    = 50
    }

    # One attempt per request: a failed run is reported, not repeated behind the user's back.
    restart {
      attempts = 0
      mode     = "fail"
    }
    reschedule {
      attempts  = 0
      unlimited = false
    }

    task "gemini" {
      driver = "polydev"

      config {
        provider = "google"
        user_id  = "${NOMAD_META_user_id}"
        command  = "gemini"
        # `--prompt=VALUE`: the CLI's parser takes everything after `=` as the value, so a prompt
        # such as "--yolo" stays a prompt.
        args     = ["--prompt=${NOMAD_META_prompt}"]
      }

      resources {
        cpu    = 500
        memory = 512
      }

      kill_timeout = "30s"
    }
  }
}
