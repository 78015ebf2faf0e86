//! The sealing memory budget (`limits.max_sealing_memory`, SECURITY.md I9): message memory
//! that planning and sealing may hold at once over all sessions.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// How long a message waits for sealing memory before it gets `451 4.3.1`.
const MEMORY_WAIT: Duration = Duration::from_secs(10);

/// Counted in KiB. A message holds about four times its size while it is planned and sealed
/// (content, canonical form, signed and encrypted copy).
pub struct MemoryBudget {
    permits: Arc<Semaphore>,
    total_kib: u32,
}

impl MemoryBudget {
    pub fn new(bytes: u64) -> Self {
        let total_kib = u32::try_from((bytes / 1024).max(1)).unwrap_or(u32::MAX);
        MemoryBudget {
            permits: Arc::new(Semaphore::new(total_kib as usize)),
            total_kib,
        }
    }

    /// What a message of `size` bytes is charged.
    fn charge(&self, size: u64) -> u32 {
        let kib = size.saturating_mul(4) / 1024 + 1;
        u32::try_from(kib).unwrap_or(u32::MAX).min(self.total_kib)
    }

    /// Waits (briefly) for the memory a message of `size` bytes needs.
    pub(super) async fn reserve(&self, size: u64) -> Option<OwnedSemaphorePermit> {
        let permits = self.permits.clone().acquire_many_owned(self.charge(size));
        tokio::time::timeout(MEMORY_WAIT, permits).await.ok()?.ok()
    }

    /// KiB currently held by messages being planned or sealed.
    pub fn in_use_kib(&self) -> u32 {
        self.total_kib
            .saturating_sub(u32::try_from(self.permits.available_permits()).unwrap_or(u32::MAX))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_message_is_charged_four_times_its_size_and_released_after() {
        let budget = MemoryBudget::new(1024 * 1024);
        let permit = budget.reserve(100 * 1024).await.expect("fits");
        assert_eq!(budget.in_use_kib(), 401);
        drop(permit);
        assert_eq!(budget.in_use_kib(), 0);
    }

    #[tokio::test]
    async fn a_message_larger_than_the_budget_takes_all_of_it_not_more() {
        let budget = MemoryBudget::new(64 * 1024);
        let permit = budget.reserve(u64::MAX).await.expect("capped at the total");
        assert_eq!(budget.in_use_kib(), 64);
        drop(permit);
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_budget_makes_the_next_message_wait_then_give_up() {
        let budget = MemoryBudget::new(64 * 1024);
        let _held = budget.reserve(16 * 1024).await.expect("fits");
        assert!(
            budget.reserve(16 * 1024).await.is_none(),
            "no memory within the wait"
        );
    }
}
