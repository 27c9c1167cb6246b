// Package sqlite is Mandate's embedded storage: agents, approvals, tool
// pins and revocations in one SQLite database (pure Go, WAL mode), with
// embedded migrations, and beside it the audit log in files of its own
// (package internal/logfile) with its query index (internal/evindex).
// An issued mandate is recorded once, as its event in the log.
//
// Every write that must be durable before its effect is released goes
// through a group committer: concurrent writers share one transaction
// (for changes to the database), one write of the log and one fsync, so
// durability does not cap throughput.
//
// It is not a cache in front of another store, and it is not safe for two
// processes to open one database for writing.
package sqlite

import (
	"context"
	"database/sql"
	"embed"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mandatehq/mandate"
	"github.com/mandatehq/mandate/auditlog"
	"github.com/mandatehq/mandate/internal/clock"
	"github.com/mandatehq/mandate/internal/evindex"
	"github.com/mandatehq/mandate/internal/logfile"
	"golang.org/x/mod/sumdb/tlog"
	"modernc.org/sqlite"
)

//go:embed migrations/*.sql
var migrations embed.FS

// Defaults for Config.
const (
	DefaultMaxBatch = 512
)

// Config configures a Store. Zero values mean defaults.
type Config struct {
	// Path of the database file; its directory is created (0700) if needed.
	Path string
	// MaxBatch bounds how many writes share one transaction.
	MaxBatch int
	// WALLimit is the WAL size, in bytes, past which the WAL is restarted
	// (DefaultWALLimit if 0).
	WALLimit int64
	// IndexFlushEntries is how many events the query index holds in
	// memory before it writes them as a run (evindex.DefaultFlushEntries
	// if 0).
	IndexFlushEntries int
	// Now is the clock; time.Now if nil.
	Now func() time.Time
	// Elapsed is the time since Open on a clock that cannot jump; the
	// monotonic clock if nil. Pruning goes by Now, but never ahead of
	// Now at Open plus Elapsed (internal/clock), so that a wall clock
	// jumping forward cannot forget revocations of live mandates. Tests
	// whose Now stands for time that passes set it to follow Now.
	Elapsed func() time.Duration
	// Logger; slog.Default() if nil.
	Logger *slog.Logger
	// SyncHook, for tests only, is called before every fsync of the audit
	// log and of the WAL; an error fails that fsync, as a disk that does
	// not confirm a write would (EIO).
	SyncHook func() error
}

// Store implements the storage interfaces of package mandate on SQLite.
type Store struct {
	db     *sql.DB // readers
	wconn  *sql.Conn
	cfg    Config
	log    *slog.Logger
	writes chan *write
	done   chan struct{}
	closed sync.Once

	closeMu  sync.RWMutex // held for reading while queueing a write
	isClosed bool

	stopCheckpoints, checkpointsDone chan struct{}

	toSync   chan committed // from the committer to the syncer
	syncDone chan struct{}
	wal      *os.File // the WAL, for fsync; syncer only
	// walPages counts the pages written to the WAL since it last started
	// over, and walRetryAt is the count at which to try again after
	// readers kept a checkpoint from completing; committer only.
	walPages, walRetryAt int64
	walCopied            walProgress   // what the background checkpoints copied
	checkpointNow        chan struct{} // asks the background checkpointer to run now
	syncHook             func() error  // tests: fails an fsync

	// The store's state (health.go), under healthMu: refuse is what
	// writes get while it is not ok, cause the fault for the log, refused
	// counts the writes refused since it degraded.
	healthMu           sync.Mutex
	state, reason      string
	since, recoveredAt time.Time
	refuse, cause      error
	refused            uint64
	failedCh           chan struct{} // closed when the store fails for good
	closing            atomic.Bool
	recoverNow         chan chan error // tests: a recovery attempt now
	// The committer's recovery: the writes whose database changes wait
	// for their events to reach the log, the retry's backoff, whether
	// the files were reconciled, and the entries reconciliation appended
	// and synced.
	held       []*write
	backoff    time.Duration
	reconciled bool
	appended   int64

	commits, committed atomic.Uint64 // transactions and writes committed
	subscriber         atomic.Pointer[func([]mandate.LoggedEvent)]
	walCheckpoints     atomic.Uint64 // checkpoints run by the committer to bound the WAL

	files   *logfile.Files // the audit log's entries and tiles
	dataBuf [][]byte       // the entries of the batch being written; committer only

	tree  auditlog.Frontier // the audit log's right edge; committer only
	tiles auditlog.Tiles    // its right-most hash tiles; committer only
	// changedTiles are the tiles the transaction being written changed;
	// committer only. edge is the durable right-most tiles, for readers.
	changedTiles []auditlog.Tile
	edge         durableEdge
	hashBuf      []auditlog.StoredHash
	logHead      logState       // the committed log
	metaBuf      []evindex.Meta // query fields of the entries in the transaction; committer only
	index        *evindex.Index

	mu      sync.RWMutex
	agents  map[string]*mandate.Agent // by ID; write-through cache of the agents table
	revoked map[string]time.Time      // unexpired revocations, mandate ID -> mandate expiry

	pruneNow func() time.Time // Now, never ahead of its reading at Open plus Elapsed
}

var (
	_ mandate.AgentStore        = (*Store)(nil)
	_ mandate.IssuanceLog       = (*Store)(nil)
	_ mandate.IssuanceGetter    = (*Store)(nil)
	_ mandate.RevocationStore   = (*Store)(nil)
	_ mandate.UsedAssertions    = (*Store)(nil)
	_ mandate.AssertionRecorder = (*Store)(nil)
	_ mandate.EventLog          = (*Store)(nil)
	_ mandate.EventQuerier      = (*Store)(nil)
)

// Open opens (creating if needed) the database at cfg.Path and migrates it.
func Open(ctx context.Context, cfg Config) (*Store, error) {
	if cfg.Path == "" {
		return nil, errors.New("sqlite: Config.Path is required")
	}
	if cfg.MaxBatch <= 0 {
		cfg.MaxBatch = DefaultMaxBatch
	}
	if cfg.WALLimit <= 0 {
		cfg.WALLimit = DefaultWALLimit
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if err := os.MkdirAll(filepath.Dir(cfg.Path), 0o700); err != nil {
		return nil, fmt.Errorf("sqlite: create data directory: %w", err)
	}
	// SQLite gives the -wal and -shm files the database file's mode, so the
	// database file is made private before SQLite first opens it.
	f, err := os.OpenFile(cfg.Path, os.O_RDONLY|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("sqlite: %w", err)
	}
	f.Close()
	for _, p := range []string{cfg.Path, cfg.Path + "-wal", cfg.Path + "-shm"} {
		if err := os.Chmod(p, 0o600); err != nil && !errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("sqlite: %w", err)
		}
	}
	// synchronous(NORMAL) in WAL mode writes the WAL without fsync at
	// commit; syncLoop fsyncs it before anything of a transaction is
	// released, so a released write survives power loss, while the next
	// transaction is already being written.
	// journal_size_limit truncates the WAL to WALLimit when it starts over.
	dsn := "file:" + cfg.Path + "?_pragma=page_size(" + strconv.Itoa(pageSize) + ")&_pragma=journal_mode(WAL)&_pragma=synchronous(NORMAL)" +
		"&_pragma=busy_timeout(5000)&_pragma=foreign_keys(1)&_pragma=cache_size(-65536)&_pragma=wal_autocheckpoint(0)" +
		"&_pragma=journal_size_limit(" + strconv.FormatInt(cfg.WALLimit, 10) + ")&_txlock=immediate"
	db, err := sql.Open("sqlite", dsn)
	if err != nil {
		return nil, fmt.Errorf("sqlite: open %s: %w", cfg.Path, err)
	}
	db.SetMaxOpenConns(8)
	s := &Store{
		db:              db,
		cfg:             cfg,
		pruneNow:        clock.NotAhead(cfg.Now, cfg.Elapsed),
		log:             cfg.Logger,
		writes:          make(chan *write, cfg.MaxBatch*4),
		done:            make(chan struct{}),
		agents:          map[string]*mandate.Agent{},
		stopCheckpoints: make(chan struct{}),
		toSync:          make(chan committed, 1024),
		syncDone:        make(chan struct{}),
		checkpointsDone: make(chan struct{}),
		checkpointNow:   make(chan struct{}, 1),
		revoked:         map[string]time.Time{},
		state:           StateOK,
		failedCh:        make(chan struct{}),
		recoverNow:      make(chan chan error),
	}
	start := time.Now()
	base := strings.TrimSuffix(cfg.Path, filepath.Ext(cfg.Path))
	if s.files, err = logfile.Open(base+"-log", validEntry); err != nil {
		db.Close()
		return nil, fmt.Errorf("sqlite: audit log: %w", err)
	}
	if cfg.SyncHook != nil {
		s.syncHook = cfg.SyncHook
		s.files.SetSyncHook(cfg.SyncHook)
	}
	fail := func(err error) (*Store, error) {
		if s.wconn != nil {
			s.wconn.Close()
		}
		s.files.Close()
		db.Close()
		return nil, err
	}
	if err := s.migrate(ctx); err != nil {
		return fail(err)
	}
	if s.wconn, err = db.Conn(ctx); err != nil {
		return fail(fmt.Errorf("sqlite: writer connection: %w", err))
	}
	if err := s.moveLogToFiles(ctx); err != nil {
		return fail(err)
	}
	if err := s.appendPending(ctx); err != nil {
		return fail(err)
	}
	if err := s.restoreLog(ctx); err != nil {
		return fail(err)
	}
	if err := s.checkTiles(ctx); err != nil {
		return fail(err)
	}
	if what := s.files.Damaged(); what != "" {
		s.log.Warn("store: the audit log's "+what+" were damaged (a lost or changed page); rebuilt them from the entries, which are the truth",
			"entries", s.tree.Size(), "took", time.Since(start).Round(time.Millisecond))
	}
	if err := s.openIndex(ctx, base+"-events-index", base+"-events-index.db", s.tree.Size()); err != nil {
		return fail(err)
	}
	if err := s.load(ctx); err != nil {
		s.index.Close()
		return fail(err)
	}
	go s.commitLoop()
	go s.syncLoop()
	go s.checkpointLoop()
	return s, nil
}

// Close stops the group committer after the writes already queued and
// closes the database.
func (s *Store) Close() error {
	var err error
	s.closed.Do(func() {
		s.closing.Store(true)
		s.closeMu.Lock()
		s.isClosed = true
		close(s.writes)
		s.closeMu.Unlock()
		<-s.done
		close(s.toSync)
		<-s.syncDone
		if s.wal != nil {
			s.wal.Close()
		}
		close(s.stopCheckpoints)
		<-s.checkpointsDone
		if s.failed() == nil {
			size, _ := s.LogHead()
			err = s.files.SyncDerived(size)
		}
		err = errors.Join(err, s.index.Close(), s.files.Close(), s.wconn.Close(), s.db.Close())
	})
	return err
}

func (s *Store) migrate(ctx context.Context) error {
	var version int
	if err := s.db.QueryRowContext(ctx, "PRAGMA user_version").Scan(&version); err != nil {
		return fmt.Errorf("sqlite: read schema version: %w", err)
	}
	names, err := migrations.ReadDir("migrations")
	if err != nil {
		return err
	}
	sort.Slice(names, func(i, j int) bool { return names[i].Name() < names[j].Name() })
	for i, e := range names {
		if i < version {
			continue
		}
		body, err := migrations.ReadFile("migrations/" + e.Name())
		if err != nil {
			return err
		}
		tx, err := s.db.BeginTx(ctx, nil)
		if err != nil {
			return fmt.Errorf("sqlite: migrate: %w", err)
		}
		if _, err := tx.ExecContext(ctx, string(body)); err != nil {
			tx.Rollback()
			return fmt.Errorf("sqlite: migration %s: %w", e.Name(), err)
		}
		if _, err := tx.ExecContext(ctx, "PRAGMA user_version = "+strconv.Itoa(i+1)); err != nil {
			tx.Rollback()
			return fmt.Errorf("sqlite: migration %s: %w", e.Name(), err)
		}
		if err := tx.Commit(); err != nil {
			return fmt.Errorf("sqlite: migration %s: %w", e.Name(), err)
		}
	}
	if version > len(names) {
		return fmt.Errorf("sqlite: database schema version %d is newer than this binary knows (%d): upgrade mandate", version, len(names))
	}
	return nil
}

// load fills the in-memory indexes: unexpired revocations.
func (s *Store) load(ctx context.Context) error {
	rows, err := s.db.QueryContext(ctx, "SELECT mandate_id, expires_at FROM revocations WHERE expires_at > ?", s.cfg.Now().UnixMilli())
	if err != nil {
		return fmt.Errorf("sqlite: load revocations: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var id string
		var exp int64
		if err := rows.Scan(&id, &exp); err != nil {
			return err
		}
		s.revoked[id] = time.UnixMilli(exp)
	}
	return rows.Err()
}

// checkpointInterval is how often the WAL is copied back into the
// database file. Checkpoints run here, on a connection of their own, rather
// than in the committer (SQLite's automatic checkpoint runs in whichever
// commit crosses the threshold, stalling every writer of that batch).
const checkpointInterval = 50 * time.Millisecond

func (s *Store) checkpointLoop() {
	defer close(s.checkpointsDone)
	t := time.NewTicker(checkpointInterval)
	defer t.Stop()
	lastDerived := time.Now()
	derivedFailed, checkpointFailing := false, false
	for {
		select {
		case <-s.stopCheckpoints:
			s.db.Exec("PRAGMA wal_checkpoint(TRUNCATE)")
			return
		case <-t.C:
		case <-s.checkpointNow:
		}
		if time.Since(lastDerived) >= derivedSyncInterval && s.Health().State == StateOK {
			lastDerived = time.Now()
			size, _ := s.LogHead()
			if err := s.files.SyncDerived(size); err != nil && !derivedFailed {
				// Once: the mark stays put from here on (logfile.SyncDerived).
				derivedFailed = true
				s.log.Warn("store: syncing the audit log's offsets and tiles failed; they are rebuilt from the entries at the next start", "err", err)
			}
		}
		// PASSIVE: copy what no reader still needs, never wait for
		// writers or readers.
		gen := s.walCopied.generation()
		var busy, frames, copied int
		if err := s.db.QueryRow("PRAGMA wal_checkpoint(PASSIVE)").Scan(&busy, &frames, &copied); err != nil {
			// Once per run of failures: on a full disk this fails every
			// interval, and the log is on that disk.
			if !checkpointFailing {
				s.log.Warn("store: WAL checkpoint failed; retrying", "err", err)
			}
			checkpointFailing = true
			continue
		}
		if checkpointFailing {
			s.log.Info("store: WAL checkpoints work again")
			checkpointFailing = false
		}
		s.walCopied.set(gen, int64(copied))
	}
}

// derivedSyncInterval is how often the audit log's offsets and tiles are
// made durable, so that a restart rebuilds at most this much of them.
const derivedSyncInterval = time.Second

// walProgress is how far the background checkpoints copied the WAL, in
// frames, in the WAL's current generation (it starts over at a restart).
type walProgress struct {
	mu     sync.Mutex
	gen    int64 // WAL restarts counted by the committer
	at     int64 // the generation frames counts in
	frames int64
}

func (p *walProgress) generation() int64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.gen
}

// set records that a checkpoint begun in generation gen copied frames.
func (p *walProgress) set(gen, frames int64) {
	p.mu.Lock()
	p.at, p.frames = gen, frames
	p.mu.Unlock()
}

// copied returns the frames copied in the current generation.
func (p *walProgress) copied() int64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.at != p.gen {
		return 0
	}
	return p.frames
}

// restarted starts a new generation: the WAL starts over.
func (p *walProgress) restarted() {
	p.mu.Lock()
	p.gen++
	p.mu.Unlock()
}

// write is one unit of work for the group committer: a change to the
// database (fn, optional) and the events that record it (entries).
type write struct {
	fn   func(ctx context.Context, tx *writeTx) error
	done chan error
	post func() // run after the write is durable, under no lock
	// entries are appended to the audit log after fn's transaction.
	entries []logEntry
}

// exec queues fn to run in a group-committed transaction, with evs
// appended to the audit log in it, and waits until that transaction is
// durable or failed. fn must have no effect outside tx: it may run twice
// (once in a batch that failed, once alone). post runs once the
// transaction is durable.
func (s *Store) exec(ctx context.Context, fn func(ctx context.Context, tx *writeTx) error, post func(), evs ...*mandate.Event) error {
	entries, err := encodeEvents(evs)
	if err != nil {
		return err
	}
	return s.queue(ctx, &write{fn: fn, post: post, entries: entries})
}

// queue queues w and waits for its verdict.
func (s *Store) queue(ctx context.Context, w *write) error {
	w.done = make(chan error, 1)
	if err := s.refuseNew(); err != nil {
		return err
	}
	s.closeMu.RLock()
	if s.isClosed {
		s.closeMu.RUnlock()
		return mandate.Errorf(mandate.EUNAVAILABLE, "store is closed")
	}
	select {
	case s.writes <- w:
		s.closeMu.RUnlock()
	case <-ctx.Done():
		s.closeMu.RUnlock()
		return mandate.Wrapf(ctx.Err(), mandate.EUNAVAILABLE, "store write not queued")
	}
	// Once queued, the write will be committed or failed: wait for the
	// verdict even if ctx ends, so that the caller never reports failure
	// for a write that became durable.
	return <-w.done
}

func (s *Store) commitLoop() {
	defer close(s.done)
	batch := make([]*write, 0, s.cfg.MaxBatch)
	retry := time.NewTimer(time.Hour)
	retry.Stop()
	defer retry.Stop()
	armed := false // retry runs
	for {
		// A degraded store tries to recover, with backoff.
		if st := s.Health().State; st == StateDegraded && !armed {
			retry.Reset(s.backoff)
			armed = true
		}
		if err := s.failed(); err != nil && len(s.held) > 0 {
			// Failed for good with writes held: see Close below.
			s.answerHeld(err)
		}
		var w *write
		select {
		case w = <-s.writes:
		case <-retry.C:
			armed = false
			s.tryRecover()
			continue
		case reply := <-s.recoverNow:
			retry.Stop() // no stale tick is received after Stop (Go 1.23)
			armed = false
			reply <- s.tryRecover()
			continue
		}
		if w == nil { // closed
			if len(s.held) > 0 {
				// Their changes are durable; Open appends their events at
				// the next start. Told they failed, as a crash would leave
				// them (see docs/reliability.md).
				s.answerHeld(s.refusal())
			}
			return
		}
		batch = append(batch[:0], w)
		// Gather: take what is queued, then yield so that writers that are
		// running (signing, say) can queue theirs, and take again, until a
		// round brings nothing. A lone writer pays one Gosched, not a timer;
		// under load, one fsync covers many writes.
		for rounds := 0; len(batch) < s.cfg.MaxBatch && rounds < maxGatherRounds; rounds++ {
			n := len(batch)
			batch = s.drain(batch)
			if len(batch) == n && rounds > 0 {
				break
			}
			runtime.Gosched()
		}
		s.commit(batch)
	}
}

// maxGatherRounds bounds the yields of one gathering, so that a steady
// trickle of writes cannot postpone a commit indefinitely.
const maxGatherRounds = 8

// drain appends the queued writes to batch, up to MaxBatch, without waiting.
func (s *Store) drain(batch []*write) []*write {
	for len(batch) < s.cfg.MaxBatch {
		select {
		case w, ok := <-s.writes:
			if !ok {
				return batch
			}
			batch = append(batch, w)
		default:
			return batch
		}
	}
	return batch
}

// commit makes a batch durable in two steps.
//
//  1. The writes that change the database run in one transaction (each in
//     a transaction of its own if that fails, so that one bad write, a
//     duplicate id say, does not fail its neighbours; a write that fails is
//     answered at once, since nothing of it was committed). The
//     transaction also records their events in log_pending, with the
//     positions they will take, and is made durable (fdatasync of SQLite's
//     WAL) before any of those events is written to the log.
//  2. The events of every surviving write are appended to the log files in
//     one write; the syncer makes them durable and only then releases the
//     writes.
//
// So a change never stands without its event: if a crash loses the log's
// write, Open appends the events from log_pending. And an event never
// stands without its change: the change was durable first. The writes
// that only append events (most of them: decisions, tool calls, issuances)
// never touch SQLite.
//
// If the disk refuses a write (health.go), the store degrades: writes of
// the batch whose changes committed are held until a recovery appends
// their events, the others are refused, and so is every write until the
// recovery succeeds.
func (s *Store) commit(batch []*write) {
	ctx := context.Background()
	if err := s.refusal(); err != nil {
		for _, w := range batch {
			w.done <- err
		}
		return
	}
	batch, err := s.runTx(ctx, batch)
	if err != nil { // a failed fsync: nothing of batch is released
		for _, w := range batch {
			w.done <- err
		}
		return
	}
	if len(batch) == 0 {
		return
	}
	// From here on, every write in batch is unanswered: answer each.
	var c committed
	if s.refusal() == nil {
		if c, err = s.appendBatch(batch); err != nil {
			s.degrade("writing the audit log failed", err)
		}
	}
	if err := s.refusal(); err != nil {
		s.hold(batch, err)
		return
	}
	s.toSync <- c
}

// committed is a batch that is written but whose events are not yet
// durable: the syncer makes them so, then releases its effects and its
// writers.
type committed struct {
	writes []*write
	logged bool // it appended to the log, which the syncer must sync
	metas  []evindex.Meta
	size   int64 // the log's size and root after it, if it appended
	root   tlog.Hash
	tiles  []auditlog.Tile // the hash tiles it changed, in their new state
	// barrier, if set, is closed once the syncer is done with everything
	// sent before it (a recovery waits for that).
	barrier chan struct{}
}

// syncLoop makes committed transactions durable. Transactions commit with
// synchronous=NORMAL, which in WAL mode writes the WAL without an fsync;
// this goroutine fsyncs the WAL for every transaction that committed
// before the fsync began, while the committer goes on with the next
// batch. So durability costs latency, not throughput, even on a disk whose
// fsync takes milliseconds. Nothing of a transaction — its writers' replies,
// the log head a checkpoint may sign, the in-memory caches — is released
// before that fsync returned.
func (s *Store) syncLoop() {
	defer close(s.syncDone)
	var items []committed
	for c := range s.toSync {
		items = append(items[:0], c)
	drain:
		for {
			select {
			case c, ok := <-s.toSync:
				if !ok {
					break drain
				}
				items = append(items, c)
			default:
				break drain
			}
		}
		// After a failed fsync nothing is released again, even if a later
		// fsync succeeds: Linux reports a writeback error once, so a later
		// success does not mean the earlier pages reached the disk.
		err := s.failed()
		logged := false
		for _, c := range items {
			logged = logged || c.logged
		}
		if err == nil && logged {
			if serr := s.syncLog(); serr != nil {
				var fe *fsyncError
				errors.As(serr, &fe)
				s.setFailed(fe.what, fe.err)
				err = s.failed()
			}
		}
		for _, c := range items {
			if c.barrier != nil {
				close(c.barrier)
				continue
			}
			if err == nil {
				s.release(c)
			}
			for _, w := range c.writes {
				if err != nil {
					w.done <- s.failed()
					continue
				}
				w.done <- nil
			}
		}
	}
}

// release makes a durable transaction's effects visible.
func (s *Store) release(c committed) {
	s.commits.Add(1)
	s.committed.Add(uint64(len(c.writes)))
	if c.size > 0 {
		// The tiles first: a reader that sees the new head finds them.
		s.edge.advance(c.tiles)
		s.logHead.mu.Lock()
		if c.size > s.logHead.size {
			s.logHead.size, s.logHead.root = c.size, c.root
		}
		s.logHead.mu.Unlock()
		if err := s.index.Add(c.metas); err != nil {
			s.log.Error("store: event index", "err", err)
		}
		if fn := s.subscriber.Load(); fn != nil {
			evs := make([]mandate.LoggedEvent, 0, len(c.metas))
			i := 0
			for _, w := range c.writes {
				for _, e := range w.entries {
					evs = append(evs, mandate.LoggedEvent{Index: c.metas[i].Idx, Event: e.ev})
					i++
				}
			}
			(*fn)(evs)
		}
	}
	for _, w := range c.writes {
		if w.post != nil {
			w.post()
		}
	}
}

// Subscribe has fn called with the events of every transaction once it is
// durable, in log order, from the goroutine that releases them: fn must
// not block (hand them on, as monitor.Monitor.Observe does) and must not
// change them. One subscriber; a later call replaces it.
func (s *Store) Subscribe(fn func([]mandate.LoggedEvent)) { s.subscriber.Store(&fn) }

// pageSize is the database's page size, so the size of a WAL frame's page.
const pageSize = 8192

// DefaultWALLimit is the WAL size past which the committer restarts the WAL.
const DefaultWALLimit = 64 << 20

// limitWAL keeps the WAL bounded. The background PASSIVE checkpoints copy
// frames into the database, but SQLite starts the WAL over only when a
// write transaction begins after a checkpoint that copied every frame,
// which a committer that never pauses does not allow: the WAL would grow
// without end. Past Config.WALLimit the committer itself runs a PASSIVE
// checkpoint between two transactions: with no writer in the way it copies
// the rest (most frames are copied already, so it is short) without
// waiting for anyone, and the next transaction starts the WAL over. The
// file stays the same, so syncWAL's handle stays valid.
//
// The WAL's content is counted in the pages the writer connection wrote
// since the WAL last started over, not by the file's size: SQLite reuses
// the file in place (journal_size_limit keeps it at WALLimit), so its
// size stays at the limit once reached, and a size test would run this
// checkpoint, with its fsync of the database, after every transaction.
func (s *Store) limitWAL(ctx context.Context) {
	if err := s.wconn.Raw(func(dc any) error {
		n, _, err := dc.(sqlite.DBStatus).Status(sqlite.DBStatusCacheWrite, true)
		s.walPages += int64(n)
		return err
	}); err != nil {
		s.log.Warn("store: WAL page count", "err", err)
		return
	}
	if s.walPages*pageSize < s.cfg.WALLimit || s.walPages < s.walRetryAt {
		return
	}
	// The committer's own checkpoint stalls every writer while it copies
	// and fsyncs: let the background checkpointer copy nearly all of the
	// WAL first, beside the writers, unless the WAL reached twice the
	// limit.
	if behind := s.walPages - s.walCopied.copied(); behind*pageSize > s.cfg.WALLimit/walStallShare &&
		s.walPages*pageSize < 2*s.cfg.WALLimit {
		select {
		case s.checkpointNow <- struct{}{}:
		default:
		}
		return
	}
	var busy, frames, copied int
	if err := s.wconn.QueryRowContext(ctx, "PRAGMA wal_checkpoint(PASSIVE)").Scan(&busy, &frames, &copied); err != nil {
		s.log.Warn("store: WAL checkpoint", "err", err)
		return
	}
	if busy != 0 || frames < 0 { // the background checkpoint runs: at the next commit
		return
	}
	s.walPages, s.walRetryAt = int64(frames), 0
	s.walCheckpoints.Add(1)
	if copied == frames { // the next transaction starts the WAL over
		s.walPages = 0
		s.walCopied.restarted()
		return
	}
	// A reader holds an old snapshot: try again after more growth.
	s.walRetryAt = s.walPages + s.cfg.WALLimit/pageSize/4
}

// walStallShare: the committer checkpoints the WAL itself once no more
// than 1/walStallShare of WALLimit is left to copy.
const walStallShare = 32

// syncWAL fsyncs the WAL file, opening it on first use. A failure is an
// *fsyncError.
func (s *Store) syncWAL() error {
	if s.syncHook != nil {
		if err := s.syncHook(); err != nil {
			return &fsyncError{"fsync of the database's WAL", err}
		}
	}
	if s.wal == nil {
		f, err := os.OpenFile(s.cfg.Path+"-wal", os.O_RDWR, 0)
		if err != nil {
			return &fsyncError{"fsync of the database's WAL", err}
		}
		s.wal = f
	}
	if err := logfile.Datasync(s.wal); err != nil {
		return &fsyncError{"fsync of the database's WAL", err}
	}
	return nil
}

// syncLog makes the audit log's entries durable. A failure is an
// *fsyncError.
func (s *Store) syncLog() error {
	if err := s.files.Sync(); err != nil {
		return &fsyncError{"fsync of the audit log", err}
	}
	return nil
}

// runTx runs the writes of batch that change the database (step 1 of
// commit) and returns the writes whose events go to the log, in order:
// every write but those that failed, which it answers. If the transaction
// could not be made durable it returns an error with the writes it did
// not answer.
func (s *Store) runTx(ctx context.Context, batch []*write) ([]*write, error) {
	if !slices.ContainsFunc(batch, func(w *write) bool { return w.fn != nil }) {
		return batch, nil
	}
	if err := s.tx(ctx, batch); err != nil {
		if refusal := s.refusal(); refusal != nil {
			// The disk refused it: nothing of batch was committed.
			for _, w := range batch {
				w.done <- refusal
			}
			return nil, nil
		}
		if len(batch) == 1 {
			batch[0].done <- err
			return nil, nil
		}
		// One by one, in order: each write's events take the positions
		// after those of the writes kept before it.
		kept := batch[:0:0]
		for i, w := range batch {
			if w.fn != nil {
				if err := s.tx(ctx, []*write{w}, kept...); err != nil {
					w.done <- err // nothing of it was committed
					if refusal := s.refusal(); refusal != nil {
						// The disk refuses writes: so are the rest.
						for _, w := range batch[i+1:] {
							w.done <- refusal
						}
						break
					}
					continue
				}
			}
			kept = append(kept, w)
		}
		batch = kept
	}
	if err := s.syncWAL(); err != nil {
		var fe *fsyncError
		errors.As(err, &fe)
		s.setFailed(fe.what, fe.err)
		return batch, s.failed()
	}
	s.limitWAL(ctx)
	return batch, nil
}

// tx runs the database changes of ws in one transaction, with their
// events in log_pending at the positions they will take after the events
// of before, which go to the log ahead of them.
func (s *Store) tx(ctx context.Context, ws []*write, before ...*write) error {
	// BEGIN and COMMIT as statements on the writer's own connection: the
	// changes, the pending events and the commit all run on it.
	tx := &writeTx{Conn: s.wconn, s: s}
	if _, err := s.wconn.ExecContext(ctx, "BEGIN IMMEDIATE"); err != nil {
		return s.writeFailed("beginning a database transaction failed", err)
	}
	rollback := func(err error) error {
		if _, rerr := s.wconn.ExecContext(ctx, "ROLLBACK"); rerr != nil && s.refusal() == nil {
			s.log.Error("store: rollback", "err", rerr)
		}
		if isDiskError(err) {
			return s.writeFailed("a database write failed", err)
		}
		return err
	}
	pos := s.tree.Size()
	for _, w := range before {
		pos += int64(len(w.entries))
	}
	for _, w := range ws {
		if w.fn != nil {
			if err := w.fn(ctx, tx); err != nil {
				return rollback(err)
			}
			for _, e := range w.entries {
				if _, err := s.wconn.ExecContext(ctx, "INSERT INTO log_pending(idx, data) VALUES(?, ?)", pos, e.data); err != nil {
					return rollback(s.writeFailed("a database write failed", err))
				}
				pos++
			}
			continue
		}
		pos += int64(len(w.entries))
	}
	// The events of earlier transactions that the log holds durably.
	durable, _ := s.LogHead()
	if _, err := s.wconn.ExecContext(ctx, "DELETE FROM log_pending WHERE idx < ?", durable); err != nil {
		return rollback(s.writeFailed("a database write failed", err))
	}
	if _, err := s.wconn.ExecContext(ctx, "COMMIT"); err != nil {
		return rollback(s.writeFailed("a database commit failed", err))
	}
	return nil
}

// appendBatch appends the events of batch to the log (step 2 of commit).
func (s *Store) appendBatch(batch []*write) (committed, error) {
	c := committed{writes: slices.Clone(batch)} // the committer reuses batch
	s.metaBuf, s.changedTiles = s.metaBuf[:0], s.changedTiles[:0]
	var entries []logEntry
	for _, w := range batch {
		entries = append(entries, w.entries...)
	}
	if len(entries) == 0 {
		return c, nil
	}
	if err := s.appendEntries(entries); err != nil {
		return committed{}, err
	}
	c.logged = true
	c.metas = slices.Clone(s.metaBuf)
	c.size, c.root = s.tree.Size(), s.tree.Root()
	// Tile data is only appended to, so the slices stay valid as they
	// are; a copy of the headers suffices.
	c.tiles = slices.Clone(s.changedTiles)
	return c, nil
}

// writeTx is the transaction a write runs in: the writer connection
// between BEGIN and COMMIT, with the prepared statements.
type writeTx struct {
	*sql.Conn
	s *Store
}

// Stats are counters of the group committer.
type Stats struct {
	Commits uint64 // batches made durable (each by one write of the log and one fsync)
	Writes  uint64 // writes in them
	// WALCheckpoints counts the checkpoints the committer ran between
	// transactions to keep the WAL under Config.WALLimit: about one per
	// WALLimit of writes.
	WALCheckpoints uint64
}

// Stats returns the group committer's counters.
func (s *Store) Stats() Stats {
	return Stats{Commits: s.commits.Load(), Writes: s.committed.Load(), WALCheckpoints: s.walCheckpoints.Load()}
}

// isUnique reports whether err is a UNIQUE or PRIMARY KEY constraint failure.
func isUnique(err error) bool {
	return err != nil && strings.Contains(err.Error(), "UNIQUE constraint failed")
}

func ms(t time.Time) int64 { return t.UnixMilli() }

// RecordIssuance implements mandate.IssuanceLog. An issuance is recorded
// once, as its event, which must carry the record (mandate.NewIssuanceEvent
// or Issuance.PutDetails; EINVALID otherwise): Issuance reads it back. It
// returns once the event is durable, sharing the log's write and fsync
// with concurrent calls.
//
// Mandate IDs are not checked for uniqueness here: they are ULIDs that the
// issuer mints, 80 random bits each millisecond, and checking would put an
// index lookup on every issuance.
//
// An issuance with an ApprovalID moves that approval from approved to used
// in a transaction made durable before the event, or fails with ECONFLICT
// and records nothing.
func (s *Store) RecordIssuance(ctx context.Context, rec *mandate.Issuance, ev *mandate.Event) error {
	got, err := mandate.IssuanceOf(ev)
	if err != nil {
		return mandate.Errorf(mandate.EINVALID, "issuance %s: its event must carry the record: %v", rec.MandateID, err)
	}
	if got.MandateID != rec.MandateID || got.TaskID != rec.TaskID || got.ParentID != rec.ParentID || got.AgentID != rec.AgentID ||
		got.Scope != rec.Scope || got.ExpiresAt.UnixMilli() != rec.ExpiresAt.UnixMilli() || got.JKT != rec.JKT ||
		got.AssertionID != rec.AssertionID || got.ApprovalID != rec.ApprovalID {
		return mandate.Errorf(mandate.EINVALID, "issuance %s: its event describes another issuance", rec.MandateID)
	}
	entries, err := encodeEvents([]*mandate.Event{ev})
	if err != nil {
		return err
	}
	w := &write{entries: entries}
	if id := rec.ApprovalID; id != "" {
		w.fn = func(ctx context.Context, tx *writeTx) error { return useApproval(ctx, tx, id) }
	}
	return s.queue(ctx, w)
}

// isIssuance reports whether e is an issuance event.
func isIssuance(e *mandate.Event) bool {
	return e.Type == mandate.EventMandateIssued || e.Type == mandate.EventMandateDelegated
}

// Issuance implements mandate.IssuanceGetter from the mandate's issuance
// event, the first event of the mandate in the log. The task purpose is
// that of the task's root mandate.
func (s *Store) Issuance(ctx context.Context, id string) (*mandate.Issuance, error) {
	if id == "" {
		return nil, mandate.Errorf(mandate.ENOTFOUND, "no mandate id")
	}
	var rec *mandate.Issuance
	// A mandate's first event is its issuance: Limit 1 reads candidates
	// a few at a time.
	err := s.walkEvents(ctx, mandate.EventFilter{Mandate: id, Limit: 1}, false, func(e mandate.LoggedEvent) error {
		if !isIssuance(e.Event) {
			return nil
		}
		r, err := mandate.IssuanceOf(e.Event)
		if err != nil {
			return mandate.Wrapf(err, mandate.EINTERNAL, "audit log entry %d", e.Index)
		}
		rec = r
		return evindex.ErrStop
	})
	if err != nil {
		return nil, err
	}
	if rec == nil {
		return nil, mandate.Errorf(mandate.ENOTFOUND, "mandate %q was not issued here", id)
	}
	if rec.ParentID != "" {
		if rec.TaskPurpose, err = s.taskPurpose(ctx, rec.TaskID); err != nil {
			return nil, err
		}
	}
	return rec, nil
}

// taskPurpose returns the purpose of task, which its root mandate's
// issuance event carries.
func (s *Store) taskPurpose(ctx context.Context, task string) (string, error) {
	var purpose string
	err := s.walkEvents(ctx, mandate.EventFilter{Task: task, Type: mandate.EventMandateIssued, Limit: 1}, false, func(e mandate.LoggedEvent) error {
		purpose, _ = e.Details["purpose"].(string)
		return evindex.ErrStop
	})
	return purpose, err
}

// RecordAssertion implements mandate.AssertionRecorder.
func (s *Store) RecordAssertion(ctx context.Context, agentID, jti string, exp time.Time) error {
	now := s.cfg.Now()
	return s.exec(ctx, func(ctx context.Context, tx *writeTx) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO used_assertions(agent_id, jti, expires_at, used_at) VALUES(?,?,?,?)
			ON CONFLICT DO NOTHING`, agentID, jti, ms(exp), ms(now))
		if err != nil {
			return mandate.Wrapf(err, mandate.EUNAVAILABLE, "store unavailable")
		}
		return nil
	}, nil)
}

// pruneChunk bounds the rows one pruning transaction deletes, so that the
// writers sharing the committer wait for a short transaction at a time.
const pruneChunk = 1000

// PruneMandates deletes what no live mandate needs any more, and returns
// how many rows it deleted:
//
//   - revocations of mandates that expired before before (the in-memory
//     set forgets them in PruneRevocations);
//   - assertions recorded by RecordAssertion that expired before before.
//
// Issuances are not rows: each is its event in the audit log, which is
// never pruned. So the live state is bounded by the mandates that are live.
//
// before must not be after the store's clock (EINVALID): forgetting the
// revocation of a mandate that is still live would make it good again
// after a restart. Nor after the time elapsed since Open allows
// (Config.Elapsed): after a jump of the wall clock forward, later
// corrected, the mandate would be live again. The deletes run through the
// committer, pruneChunk rows per transaction, with no audit event.
func (s *Store) PruneMandates(ctx context.Context, before time.Time) (int64, error) {
	if now := s.pruneNow(); before.After(now) {
		return 0, mandate.Errorf(mandate.EINVALID, "cannot prune mandates expired before %s: that is after now (%s)",
			before.UTC().Format(time.RFC3339), now.UTC().Format(time.RFC3339))
	}
	b := ms(before)
	stmts := []struct {
		q    string
		args []any
	}{
		{`DELETE FROM revocations WHERE mandate_id IN (SELECT mandate_id FROM revocations
			WHERE expires_at < ? LIMIT ?)`, []any{b, pruneChunk}},
		// An assertion is used before it expires: used_at < before bounds
		// the scan by the index on used_at.
		{`DELETE FROM used_assertions WHERE rowid IN (SELECT rowid FROM used_assertions
			WHERE used_at < ? AND expires_at < ? LIMIT ?)`, []any{b, b, pruneChunk}},
	}
	var total int64
	for _, st := range stmts {
		for {
			if err := ctx.Err(); err != nil {
				return total, mandate.Wrapf(err, mandate.EUNAVAILABLE, "pruning stopped")
			}
			var n int64
			err := s.exec(ctx, func(ctx context.Context, tx *writeTx) error {
				res, err := tx.ExecContext(ctx, st.q, st.args...)
				if err != nil {
					return mandate.Wrapf(err, mandate.EUNAVAILABLE, "store unavailable")
				}
				n, err = res.RowsAffected()
				return err
			}, nil)
			if err != nil {
				return total, err
			}
			total += n
			if n < pruneChunk {
				break
			}
		}
	}
	return total, nil
}
