//! What the gss serves and reports at one moment, published whole: the rendered zone
//! (which carries its config template), the health view it was rendered from, and
//! the fast path's table of that zone. The supervisor swaps one `ArcSwap<Snapshot>`
//! per change, so every reader (UDP, TCP, `explain`, tests) sees one consistent state:
//! never a new zone with an old config or health view.

use std::sync::{Arc, OnceLock};

use shared::config::GssConfig;

use crate::error::GssError;
use crate::fast::{render_table, FastTable};
use crate::select::HealthView;
use crate::zone::{render_all_up, Zone};

/// One published state of the gss.
#[derive(Debug)]
pub struct Snapshot {
    /// The answers (and, through `zone.tpl`, the config they come from).
    pub zone: Arc<Zone>,
    /// Every site's state when this snapshot was published.
    pub view: HealthView,
    /// Pre-rendered UDP responses of `zone`, filled right after publishing so
    /// rendering never delays a failover; shared by snapshots with the same zone.
    table: Arc<OnceLock<FastTable>>,
}

impl Snapshot {
    /// A snapshot of a freshly rendered zone; its table is not rendered yet.
    pub fn new(zone: Zone, view: HealthView) -> Snapshot {
        Snapshot {
            zone: Arc::new(zone),
            view,
            table: Arc::new(OnceLock::new()),
        }
    }

    /// The same answers (and table) under a new health view.
    pub fn with_view(&self, view: HealthView) -> Snapshot {
        Snapshot {
            zone: self.zone.clone(),
            view,
            table: self.table.clone(),
        }
    }

    /// `cfg` with every site up and its table rendered, for tools and fuzzing that
    /// need answers without probes or sockets.
    pub fn all_up(cfg: &GssConfig) -> Result<Snapshot, GssError> {
        let s = Snapshot::new(render_all_up(cfg)?, HealthView::default());
        s.fill_table();
        Ok(s)
    }

    /// The fast path's table, if rendered yet.
    pub fn table(&self) -> Option<&FastTable> {
        self.table.get()
    }

    /// The fast path's table, rendering it on first call.
    pub fn fill_table(&self) -> &FastTable {
        self.table.get_or_init(|| render_table(&self.zone))
    }

    /// Whether `other` shares this snapshot's table (the same rendered zone).
    pub fn same_table(&self, other: &Snapshot) -> bool {
        Arc::ptr_eq(&self.table, &other.table)
    }
}
