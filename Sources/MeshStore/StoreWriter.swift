import Foundation

/// Runs writes (the database's, a recording's) on a thread of their own, in the order submitted, from a queue
/// of at most `capacity` waiting writes, so no write ever blocks the node's event loop (docs/storage.md).
/// A write submitted to a full queue is refused and counted (`shed`): the caller then does what it would do
/// had the write failed (a record is not acknowledged, so no acknowledged state is ever lost).
public final class StoreWriter: @unchecked Sendable {
    public let capacity: Int
    private let queue = DispatchQueue(label: "meshnode.store-writer")
    private let lock = NSLock()
    private var waiting = 0
    private var shedCount = 0
    private var failedCount = 0

    public init(capacity: Int = 1_024) { self.capacity = capacity }

    /// Queues `write`; `done` runs on the writer's thread after it, with the write's error if it threw. Returns
    /// false, without running either, when `capacity` writes are already waiting, unless `always` (a write that
    /// must not be lost, such as closing a recording: it waits its turn however long the queue).
    @discardableResult
    public func submit(_ write: @escaping @Sendable () throws -> Void, always: Bool = false,
                       done: @escaping @Sendable ((any Error)?) -> Void = { _ in }) -> Bool {
        let accepted = lock.withLock {
            guard always || waiting < capacity else {
                shedCount += 1
                return false
            }
            waiting += 1
            return true
        }
        guard accepted else { return false }
        queue.async {
            var failure: (any Error)?
            do { try write() } catch { failure = error }
            self.lock.withLock {
                self.waiting -= 1
                if failure != nil { self.failedCount += 1 }
            }
            done(failure)
        }
        return true
    }

    /// Blocks until every write submitted so far is done (at shutdown).
    public func drain() { queue.sync {} }

    public struct Counters: Sendable, Codable, Equatable {
        /// Writes waiting now.
        public var waiting: Int
        /// Writes refused because the queue was full.
        public var shed: Int
        /// Writes that failed.
        public var failed: Int
    }

    public var counters: Counters { lock.withLock { Counters(waiting: waiting, shed: shedCount, failed: failedCount) } }
}
