//! How much one page of a listing may hold.
//!
//! A listing's rows can carry large text (a run's output, an orchestration's steps, an
//! orchestration run's state), so a page is bounded in bytes as well as in rows: a store
//! reads rows one at a time and stops after the one that brings the page's text to
//! [`PageSize::bytes`] ([`PAGE_BYTES`]). The service then ends the page there and hands out a cursor,
//! whatever `limit` the client asked for.

/// Most bytes of stored text one page of runs, orchestrations or orchestration runs
/// carries, short of its last row: 256 KiB, as much as one run's output. The answer holds
/// that text parsed (a run's output is a JSON value, some 16 to 30 times its text at worst)
/// and then written out again, so a page of 1,000 runs of 256 KiB outputs would otherwise
/// be gigabytes for one request. A page always holds at least one row.
pub const PAGE_BYTES: usize = 256 * 1024;

/// The bounds of one page that a store reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PageSize {
    /// Most rows.
    pub rows: usize,
    /// The page ends after the row that brings the weight of its rows to this.
    pub bytes: usize,
}

impl PageSize {
    /// `rows` rows within [`PAGE_BYTES`].
    pub fn rows(rows: usize) -> Self {
        PageSize {
            rows,
            bytes: PAGE_BYTES,
        }
    }
}

/// A page being read: rows are pushed one at a time until it is full.
#[derive(Debug)]
pub struct PageFill<T> {
    size: PageSize,
    rows: Vec<T>,
    bytes: usize,
}

impl<T> PageFill<T> {
    /// An empty page of `size`.
    pub fn new(size: PageSize) -> Self {
        PageFill {
            size,
            rows: Vec::new(),
            bytes: 0,
        }
    }

    /// Whether the page takes no more rows: stop reading.
    pub fn is_full(&self) -> bool {
        self.rows.len() >= self.size.rows || self.bytes >= self.size.bytes
    }

    /// Adds `row`, which weighs `weight` bytes (its text). Returns whether the page is full.
    pub fn push(&mut self, row: T, weight: usize) -> bool {
        self.rows.push(row);
        self.bytes = self.bytes.saturating_add(weight);
        self.is_full()
    }

    /// The rows read.
    pub fn into_rows(self) -> Vec<T> {
        self.rows
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Pushes `weights` until the page says it is full; returns the page and how many rows
    /// were pushed.
    fn read(size: PageSize, weights: &[usize]) -> (Vec<usize>, usize) {
        let mut page = PageFill::new(size);
        let mut pulled = 0;
        for w in weights {
            if page.is_full() {
                break;
            }
            pulled += 1;
            page.push(*w, *w);
        }
        (page.into_rows(), pulled)
    }

    #[test]
    fn a_page_ends_at_its_row_count_or_after_the_row_that_fills_its_bytes() {
        let size = PageSize { rows: 3, bytes: 10 };
        assert_eq!(read(size, &[1, 1, 1, 1, 1]), (vec![1, 1, 1], 3));
        assert_eq!(read(size, &[4, 6, 1]), (vec![4, 6], 2));
        assert_eq!(read(size, &[4, 5]), (vec![4, 5], 2));
        // A row heavier than the whole budget still makes a page of one.
        assert_eq!(read(size, &[50, 1]), (vec![50], 1));
        assert_eq!(read(PageSize { rows: 0, bytes: 10 }, &[1]), (vec![], 0));
    }
}
