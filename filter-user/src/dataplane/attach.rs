//! Attaching the program to interfaces. Every attachment is a BPF link
//! (Linux 5.9+; namewall needs 5.18): pinnable, replaced atomically by the
//! next version of the program, detached when the last reference goes.

use std::path::PathBuf;

use aya::programs::{
    Xdp, XdpMode,
    links::{FdLink, PinnedLink},
    xdp::XdpLink,
};

use super::{
    error::{FilterError, program_err},
    pins::{PinDir, unpin},
};

/// One interface the program is attached to.
struct Attached {
    iface: String,
    link: FdLink,
    /// The link's pin, if pinned: the attachment outlives the process.
    pin: Option<PathBuf>,
}

/// The interfaces the program is attached to, and where their links are
/// pinned.
pub(super) struct Links {
    pin: Option<PinDir>,
    attached: Vec<Attached>,
}

impl Links {
    /// None yet; links are pinned in `pin` if given.
    pub(super) fn new(pin: Option<PinDir>) -> Self {
        Self { pin, attached: Vec::new() }
    }

    pub(super) fn pin_dir(&self) -> Option<&PinDir> {
        self.pin.as_ref()
    }

    /// Attaches `prog` to `iface`. With a pin directory, an interface the
    /// running filter is attached to gets this program through an atomic
    /// link update (no packet goes unfiltered), and a new attachment is
    /// pinned so it outlives this process.
    pub(super) fn attach(&mut self, prog: &mut Xdp, iface: &str, mode: XdpMode) -> Result<(), FilterError> {
        let pin = self.pin.as_ref().map(|p| p.link(iface));
        if let Some(path) = pin.as_ref().filter(|p| p.exists()) {
            let old = PinnedLink::from_pin(path).map_err(|e| FilterError::Link(format!("{}: {e}", path.display())))?;
            let link = XdpLink::try_from(FdLink::from(old))
                .map_err(|e| FilterError::Link(format!("{}: {e}", path.display())))?;
            match prog.attach_to_link(link) {
                Ok(id) => {
                    let link = prog.take_link(id).map_err(program_err(format!("holding the link on {iface}")))?;
                    let link = FdLink::try_from(link).map_err(|e| FilterError::Link(e.to_string()))?;
                    self.attached.push(Attached { iface: iface.to_owned(), link, pin });
                    return Ok(());
                }
                // The pinned link does not work any more (its interface was
                // deleted and made again, so it is defunct): unpinned, and a
                // fresh attachment below takes its place.
                Err(e) => {
                    tracing::warn!("the pinned link on {iface} cannot take the new program ({e}); attaching afresh");
                    unpin(path)?;
                }
            }
        }
        let id = prog.attach(iface, mode).map_err(program_err(format!("attaching to {iface} ({mode:?} mode)")))?;
        let link = prog.take_link(id).map_err(program_err(format!("holding the link on {iface}")))?;
        // No BPF link (a netlink attachment) only on kernels older than
        // namewall supports.
        let link = FdLink::try_from(link).map_err(|e| {
            FilterError::Link(format!("{iface}: no BPF link for XDP ({e}); Linux 5.18 or later is needed"))
        })?;
        let link = match &pin {
            Some(path) => {
                let pinned =
                    link.pin(path).map_err(|e| FilterError::Link(format!("pinning {}: {e}", path.display())))?;
                FdLink::from(pinned)
            }
            None => link,
        };
        self.attached.push(Attached { iface: iface.to_owned(), link, pin });
        Ok(())
    }

    /// Detaches from every interface, pinned or not.
    pub(super) fn detach_all(&mut self) -> Result<(), FilterError> {
        for a in std::mem::take(&mut self.attached) {
            if let Some(p) = &a.pin {
                unpin(p)?;
            }
            // The last reference gone, the kernel detaches it.
            drop(a.link);
        }
        Ok(())
    }

    /// Detaches from interfaces a running filter was attached to that this
    /// one is not (they were dropped from the configuration).
    pub(super) fn detach_others(&mut self) -> Result<Vec<String>, FilterError> {
        let Some(pin) = &self.pin else { return Ok(Vec::new()) };
        let mine: Vec<&str> = self.interfaces().collect();
        let mut gone = Vec::new();
        for iface in pin.linked_interfaces() {
            if !mine.contains(&iface.as_str()) {
                unpin(&pin.link(&iface))?;
                gone.push(iface);
            }
        }
        Ok(gone)
    }

    /// Interfaces attached to.
    pub(super) fn interfaces(&self) -> impl Iterator<Item = &str> {
        self.attached.iter().map(|a| a.iface.as_str())
    }
}
