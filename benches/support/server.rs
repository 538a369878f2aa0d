//! What the benchmarks' in-process servers (the origin registry, the speed
//! benchmark's minimal file server) share: a tokio runtime of their own, on
//! one worker thread, so the benchmark's blocking clients cannot starve
//! them and their CPU time can be read from `/proc` by thread name; and a
//! loopback accept loop that backs off instead of spinning when accepting
//! fails.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context as _;
use tokio::net::{TcpListener, TcpStream};
use tokio::runtime::Runtime;

/// A one-worker runtime named `thread_name`; dropping it stops every
/// listener and connection on it.
pub(crate) struct ServerRuntime {
    thread_name: &'static str,
    runtime: Option<Runtime>,
}

impl ServerRuntime {
    pub(crate) fn start(thread_name: &'static str) -> anyhow::Result<ServerRuntime> {
        // One worker: the servers' work is light next to what they serve
        // (pullcache, nginx, curl), and the machine's few cores are shared
        // with all of them.
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name(thread_name)
            .enable_all()
            .build()
            .with_context(|| format!("cannot build the {thread_name} runtime"))?;
        Ok(ServerRuntime {
            thread_name,
            runtime: Some(runtime),
        })
    }

    /// Listens on a fresh port of 127.0.0.1 and hands every accepted
    /// connection to `accepted`, which runs on the accept loop and must
    /// spawn whatever takes longer.
    pub(crate) fn listen(
        &self,
        accepted: impl Fn(TcpStream) + Send + 'static,
    ) -> anyhow::Result<SocketAddr> {
        let runtime = self.runtime.as_ref().expect("running until dropped");
        let listener = runtime
            .block_on(TcpListener::bind("127.0.0.1:0"))
            .with_context(|| format!("cannot bind {} on 127.0.0.1", self.thread_name))?;
        let addr = listener.local_addr()?;
        runtime.spawn(async move {
            loop {
                match listener.accept().await {
                    Ok((tcp, _)) => accepted(tcp),
                    // Out of file descriptors or similar: back off, don't spin.
                    Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
                }
            }
        });
        Ok(addr)
    }
}

impl Drop for ServerRuntime {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}
