//! The configured links being dialled, which a reload may change: one
//! [`crate::link::dial_loop`] per `links` entry, each with its own cancellation
//! token (a child of the server's), so that an entry removed from the config
//! stops its dialling and closes its link while the others carry on.

use std::collections::BTreeMap;
use std::sync::Arc;

use parking_lot::Mutex;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::router::Router;

/// See the module documentation.
#[derive(Debug, Default)]
pub struct Dials {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    /// Where dial loops run, once the server serves.
    tasks: Option<(TaskTracker, CancellationToken)>,
    /// Each configured entry, as written, and its token (None before serving).
    running: BTreeMap<String, Option<CancellationToken>>,
}

/// What [`Dials::set`] did.
#[derive(Debug, Default, PartialEq)]
pub struct LinkChanges {
    pub added: Vec<String>,
    pub removed: Vec<String>,
}

impl Dials {
    pub fn new(specs: &[String]) -> Dials {
        let d = Dials::default();
        d.inner.lock().running = specs.iter().map(|s| (s.clone(), None)).collect();
        d
    }

    /// The entries configured now.
    pub fn configured(&self) -> Vec<String> {
        self.inner.lock().running.keys().cloned().collect()
    }

    /// Starts dialling every configured entry, on `tracker`, until `shutdown`.
    pub(crate) fn start(
        &self,
        router: &Arc<Router>,
        tracker: TaskTracker,
        shutdown: CancellationToken,
    ) {
        let mut inner = self.inner.lock();
        inner.tasks = Some((tracker, shutdown));
        let specs: Vec<String> = inner.running.keys().cloned().collect();
        for spec in specs {
            let token = spawn(&inner, router, &spec);
            inner.running.insert(spec, token);
        }
    }

    /// Makes the configured entries `specs`: new ones are dialled, removed ones
    /// stopped (their links closed); the others are left alone, up or not.
    pub fn set(&self, router: &Arc<Router>, specs: &[String]) -> LinkChanges {
        let mut inner = self.inner.lock();
        let mut changes = LinkChanges::default();
        let keep: std::collections::BTreeSet<&String> = specs.iter().collect();
        let gone: Vec<String> = inner
            .running
            .keys()
            .filter(|s| !keep.contains(s))
            .cloned()
            .collect();
        for spec in gone {
            if let Some(Some(token)) = inner.running.remove(&spec) {
                token.cancel();
            }
            changes.removed.push(spec);
        }
        for spec in specs {
            if !inner.running.contains_key(spec) {
                let token = spawn(&inner, router, spec);
                inner.running.insert(spec.clone(), token);
                changes.added.push(spec.clone());
            }
        }
        if !specs.is_empty() {
            router.note_federated();
        }
        changes
    }
}

fn spawn(inner: &Inner, router: &Arc<Router>, spec: &str) -> Option<CancellationToken> {
    let (tracker, shutdown) = inner.tasks.as_ref()?;
    match crate::link::parse_link(spec) {
        Ok(alts) => {
            let token = shutdown.child_token();
            tracker.spawn(crate::link::dial_loop(router.clone(), alts, token.clone()));
            Some(token)
        }
        Err(e) => {
            tracing::error!("{e}");
            None
        }
    }
}
