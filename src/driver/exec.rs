//! ExecTaskStreaming (`nomad alloc exec`): bridge Nomad's bidirectional stream to an exec session.
//!
//! Protocol (nomad-protocol.md §5.9): the first request carries `setup`; later ones carry stdin
//! data, a stdin close, a terminal size, or nothing (a heartbeat, ignored). The response stream
//! sends output chunks, then `stdout{close}` and `stderr{close}`, then `{exited: true, result}` —
//! without that last frame Nomad's CLI reports "websocket closed before receiving exit code".

use std::sync::Arc;

use bytes::Bytes;
use futures::StreamExt;
use tonic::codegen::BoxStream;
use tonic::{Status, Streaming};

use super::status;
use crate::core::Core;
use crate::engine::{ExecInput, ExecOutput};
use crate::pb::hashicorp::nomad::plugins::drivers::proto::{
    ExecTaskStreamingIoOperation as IoOperation, ExecTaskStreamingRequest,
    ExecTaskStreamingResponse, ExitResult,
};

fn output(stdout: Option<IoOperation>, stderr: Option<IoOperation>) -> ExecTaskStreamingResponse {
    ExecTaskStreamingResponse {
        stdout,
        stderr,
        exited: false,
        result: None,
    }
}

fn data(bytes: Bytes) -> Option<IoOperation> {
    Some(IoOperation {
        data: bytes.to_vec(),
        close: false,
    })
}

fn closed() -> Option<IoOperation> {
    Some(IoOperation {
        data: Vec::new(),
        close: true,
    })
}

/// Start the command named by the stream's setup message and wire both directions.
pub async fn bridge(
    core: Arc<Core>,
    mut requests: Streaming<ExecTaskStreamingRequest>,
) -> Result<BoxStream<ExecTaskStreamingResponse>, Status> {
    let setup = requests
        .message()
        .await?
        .and_then(|first| first.setup)
        .ok_or_else(|| Status::invalid_argument("the first exec message must carry setup"))?;
    if setup.command.is_empty() {
        return Err(Status::invalid_argument("exec needs a command"));
    }
    let session = core
        .exec_streaming(&setup.task_id, setup.command, setup.tty)
        .await
        .map_err(status::from_core)?;

    let input = session.input.clone();
    tokio::spawn(async move {
        while let Ok(Some(request)) = requests.message().await {
            if let Some(size) = request.tty_size {
                let height = u16::try_from(size.height.max(0)).unwrap_or(u16::MAX);
                let width = u16::try_from(size.width.max(0)).unwrap_or(u16::MAX);
                if input
                    .send(ExecInput::Resize { height, width })
                    .await
                    .is_err()
                {
                    return;
                }
            }
            if let Some(stdin) = request.stdin {
                if !stdin.data.is_empty()
                    && input
                        .send(ExecInput::Stdin(stdin.data.into()))
                        .await
                        .is_err()
                {
                    return;
                }
                if stdin.close && input.send(ExecInput::CloseStdin).await.is_err() {
                    return;
                }
            }
        }
    });

    let exit_code = session.exit_code;
    let chunks = session
        .output
        .map(|chunk| match chunk {
            Ok(ExecOutput::Stdout(bytes)) => Some(Ok(output(data(bytes), None))),
            Ok(ExecOutput::Stderr(bytes)) => Some(Ok(output(None, data(bytes)))),
            Err(err) => {
                tracing::warn!(error = %err, "exec output stream failed");
                None
            }
        })
        .take_while(|chunk| futures::future::ready(chunk.is_some()))
        .filter_map(futures::future::ready);
    let finish = futures::stream::iter([Ok(output(closed(), None)), Ok(output(None, closed()))])
        .chain(futures::stream::once(async move {
            let exit_code = match exit_code.await {
                Ok(code) => i32::try_from(code).unwrap_or(-1),
                Err(err) => {
                    tracing::warn!(error = %err, "exec exit code unavailable");
                    -1
                }
            };
            Ok(ExecTaskStreamingResponse {
                stdout: None,
                stderr: None,
                exited: true,
                result: Some(ExitResult {
                    exit_code,
                    signal: 0,
                    oom_killed: false,
                }),
            })
        }));
    Ok(chunks.chain(finish).boxed())
}
