//! Where IPAM state lives when no ipam-server stands in between: one
//! description for the server's flags, the CNI plugin's network config and
//! ipamctl's flags, and one way to open it.

use std::path::PathBuf;
use std::sync::Arc;

use ipam_store::embedded::EmbeddedStore;
use ipam_store::etcd::{EtcdOptions, EtcdStore};
use ipam_store::kubernetes::KubernetesStore;
use ipam_store::memory::MemoryStore;
use ipam_store::{Datastore, Ipam, MemoryNodeLabels, StoreError};

use crate::labels::{EtcdLabels, KubernetesLabels, LabelSource, ReleaseLabels, StoredLabels};

/// A datastore to open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DatastoreSettings {
    /// In memory, lost on exit: for tests and trials.
    Memory,
    /// ipam-server's embedded store: one redb file in a directory, which
    /// one process holds at a time.
    Embedded {
        /// The data directory (created when missing).
        data_dir: PathBuf,
    },
    /// etcd v3 in Calico's key layout.
    Etcd {
        /// Endpoints (`http://127.0.0.1:2379`).
        endpoints: Vec<String>,
        /// Deadlines and keep-alives.
        options: EtcdOptions,
    },
    /// Calico's custom resources in a Kubernetes cluster.
    Kubernetes {
        /// A kubeconfig; else `KUBECONFIG`, `~/.kube/config` or in-cluster.
        kubeconfig: Option<PathBuf>,
        /// An API server URL, used only when no kubeconfig is given
        /// (calico-ipam's `kubernetes.k8s_api_root`).
        api_root: Option<String>,
    },
}

/// An open datastore.
pub struct Opened {
    /// The datastore.
    pub store: Arc<dyn Datastore>,
    /// The Kubernetes client, on the Kubernetes datastore (ipam-server's
    /// garbage collector watches pods and nodes through it).
    pub kubernetes: Option<kube::Client>,
    /// Where its assignments read node and namespace labels
    /// ([`crate::labels`]), and where [`Opened::engine`]'s releases read
    /// node labels: an owner with a better source (ipam-server's, which
    /// reads a watch of every Node) sets it before building the engine.
    pub labels: Arc<dyn LabelSource>,
}

impl Opened {
    /// The engine over this datastore, reading node labels where its
    /// assignments do when a release needs them (affinity consistency).
    pub fn engine(&self) -> Ipam<dyn Datastore> {
        Ipam::new(self.store.clone()).with_node_labels(Arc::new(ReleaseLabels(self.labels.clone())))
    }
}

/// Opens the datastore `settings` describe. etcd and Kubernetes connect
/// lazily: an unreachable one fails at its first call, not here.
pub async fn open(settings: &DatastoreSettings) -> Result<Opened, StoreError> {
    let (store, labels): (Arc<dyn Datastore>, Arc<dyn LabelSource>) = match settings {
        DatastoreSettings::Memory => (
            Arc::new(MemoryStore::new()),
            Arc::new(StoredLabels::new(Arc::new(MemoryNodeLabels::default()))),
        ),
        DatastoreSettings::Embedded { data_dir } => {
            let store = Arc::new(EmbeddedStore::open(data_dir)?);
            (store.clone(), Arc::new(StoredLabels::new(store)))
        }
        DatastoreSettings::Etcd { endpoints, options } => {
            let store = Arc::new(EtcdStore::connect(endpoints, options.clone()).await?);
            (store.clone(), Arc::new(EtcdLabels::new(store)))
        }
        DatastoreSettings::Kubernetes {
            kubeconfig,
            api_root,
        } => {
            let store = match (kubeconfig, api_root) {
                (None, Some(url)) => KubernetesStore::connect_url(url)?,
                (path, _) => KubernetesStore::connect(path.as_deref()).await?,
            };
            return Ok(Opened {
                kubernetes: Some(store.client().clone()),
                labels: Arc::new(KubernetesLabels::new(store.client().clone())),
                store: Arc::new(store),
            });
        }
    };
    Ok(Opened {
        store,
        kubernetes: None,
        labels,
    })
}
