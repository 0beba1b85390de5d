package layerindex

import (
	"errors"
	"fmt"
	"sync"
	"unsafe"
)

// ErrIndexMemory means an index would take the Manager's indexes past
// Options.MaxIndexBytes even after every idle one was dropped from memory.
var ErrIndexMemory = errors.New("index memory bound reached")

// indexBudget is what a Manager's indexes hold in memory, in estimated
// bytes: those in its LRU (released when dropped), those being built
// (released if the pass fails), and eStargz TOC indexes, which their
// layer keeps. It bounds every layer of a mount together, where
// Options.MaxEntries bounds one.
type indexBudget struct {
	mu    sync.Mutex
	limit int64
	used  int64
}

// Estimated costs: the Entry and its share of the index's maps and
// listings, plus its strings; a checkpoint and its window; a zstd frame.
const (
	entryOverhead      = int64(unsafe.Sizeof(Entry{})) + 160
	checkpointOverhead = int64(unsafe.Sizeof(checkpoint{}))
	frameCost          = int64(unsafe.Sizeof(zstdFrame{}))
)

func entryCost(e *Entry) int64 {
	c := entryOverhead + int64(len(e.Name)+len(e.Linkname))
	for k, v := range e.Xattrs {
		c += int64(len(k)+len(v)) + 48
	}
	return c
}

func checkpointCost(cp *checkpoint) int64 { return checkpointOverhead + int64(len(cp.Window)) }

// indexCost is the estimated memory of idx.
func indexCost(idx *layerIndex) int64 {
	var c int64
	for i := range idx.Checkpoints {
		c += checkpointCost(&idx.Checkpoints[i])
	}
	c += int64(len(idx.Frames)) * frameCost
	if idx.Tar != nil {
		c += tarIndexCost(idx.Tar)
	}
	return c
}

func tarIndexCost(x *Index) int64 {
	var c int64
	for _, e := range x.entries {
		c += entryCost(e)
	}
	return c
}

// charge takes n bytes from the budget, first dropping idle indexes from
// the LRU (least recently used first) to make room; ErrIndexMemory if
// that is not enough. what names the index, for the error.
func (m *Manager) charge(n int64, what string) error {
	b := &m.budget
	for {
		b.mu.Lock()
		if b.limit < 0 || b.used+n <= b.limit {
			b.used += n
			b.mu.Unlock()
			return nil
		}
		used := b.used
		b.mu.Unlock()
		if _, _, ok := m.indexes.RemoveOldest(); !ok {
			return fmt.Errorf("%s: %w: the indexes of this mount would take more than %d MiB (%d MiB held by passes running and eStargz layers)",
				what, ErrIndexMemory, b.limit>>20, used>>20)
		}
	}
}

// release gives n bytes back.
func (m *Manager) release(n int64) {
	m.budget.mu.Lock()
	m.budget.used -= n
	m.budget.mu.Unlock()
}

// IndexMemory is the estimated memory the Manager's indexes hold, and its
// bound (Options.MaxIndexBytes; negative: none).
func (m *Manager) IndexMemory() (used, limit int64) {
	m.budget.mu.Lock()
	defer m.budget.mu.Unlock()
	return m.budget.used, m.budget.limit
}

// keep puts idx in the LRU, charged: its cost is given back when the LRU
// drops it (dropped). An index not charged (loaded, or dropped before) is
// charged first; if the budget has no room it is returned, not kept: its
// callers use it, and the next one loads or builds it again. If the key
// holds another index already, that one is returned and idx's charge
// given back.
func (m *Manager) keep(key string, idx *layerIndex) (*layerIndex, error) {
	if idx.charged.Load() == 0 {
		n := indexCost(idx)
		if err := m.charge(n, "index of layer "+key); err != nil {
			return idx, err
		}
		idx.charged.Add(n)
	}
	if prev, ok, _ := m.indexes.PeekOrAdd(key, idx); ok && prev != idx {
		m.release(idx.charged.Swap(0))
		return prev, nil
	}
	return idx, nil
}

// dropped is the LRU's eviction callback.
func (m *Manager) dropped(_ string, idx *layerIndex) { m.release(idx.charged.Swap(0)) }

// logBudgetOnce logs, once per layer, that its index did not fit.
func (l *Layer) logBudgetOnce(err error) {
	if l.budgetLogged.CompareAndSwap(false, true) {
		l.m.opts.Logger.WithField("layer", l.key).Error(err.Error())
	}
}
