import Foundation
import MeshDHT
import MeshIdentity
@testable import MeshStore
import Testing

@Suite struct NodeStoreTests {
    private func withStore(_ body: (String) throws -> Void) rethrows {
        let dir = NSTemporaryDirectory() + "mesh-store-\(UUID().uuidString)"
        try? FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try body(dir + "/node.db")
    }

    private func record(_ wallet: PrivateKey, sequence: UInt64, expiresAtMs: Int64) -> PresenceRecord {
        PresenceRecord.make(wallet: wallet, homeNode: NodeID(publicKey: PrivateKey().publicKey),
                            endpoints: [DHTEndpoint(parsing: "127.0.0.1:4460")!], relays: [], sequence: sequence,
                            expiresAtMs: expiresAtMs)
    }

    @Test func contactsRecordsAndCountersSurviveReopening() throws {
        try withStore { path in
            let contacts = (0..<5).map { i in
                Contact(id: NodeID(publicKey: PrivateKey().publicKey), endpoint: DHTEndpoint(parsing: "127.0.0.\(i + 1):\(4000 + i)")!)
            }
            let stale = Contact(id: NodeID(publicKey: PrivateKey().publicKey), endpoint: DHTEndpoint(parsing: "127.0.0.9:9")!)
            let wallet = PrivateKey()
            do {
                let store = try NodeStore(path: path)
                try store.updateContacts(added: contacts + [stale], removed: [], nowMs: 1_000)
                try store.updateContacts(added: [], removed: [stale], nowMs: 2_000)
                try store.saveRecord(record(wallet, sequence: 2, expiresAtMs: 10_000))
                #expect(try store.nextValue("x") == 1)
                #expect(try store.nextValue("x") == 2)
            }
            let reopened = try NodeStore(path: path)
            #expect(Set(try reopened.contacts()) == Set(contacts))
            #expect(try reopened.records(nowMs: 5_000).map(\.sequence) == [2])
            #expect(try reopened.nextValue("x") == 3)
            #expect(try reopened.nextValue("x", atLeast: 100) == 100)
        }
    }

    @Test func olderSequencesDoNotReplaceNewerAndExpiredRecordsGo() throws {
        try withStore { path in
            let store = try NodeStore(path: path)
            let wallet = PrivateKey()
            try store.saveRecord(record(wallet, sequence: 5, expiresAtMs: 10_000))
            try store.saveRecord(record(wallet, sequence: 4, expiresAtMs: 20_000))
            #expect(try store.records(nowMs: 0).map(\.sequence) == [5])
            try store.saveRecord(record(wallet, sequence: 6, expiresAtMs: 20_000))
            #expect(try store.records(nowMs: 0).map(\.sequence) == [6])
            #expect(try store.records(nowMs: 20_000).isEmpty)
            try store.saveRecord(record(wallet, sequence: 7, expiresAtMs: 30_000))
            try store.deleteRecord(key: NodeID.key(for: wallet.address))
            #expect(try store.records(nowMs: 0).isEmpty)
        }
    }

    @Test func damagedDatabaseGivesAClearMessage() throws {
        try withStore { path in
            FileManager.default.createFile(atPath: path, contents: Data(repeating: 0x5a, count: 8_192))
            do {
                _ = try NodeStore(path: path)
                Issue.record("a damaged file must be refused")
            } catch let error as StoreError {
                #expect(error.message.contains("damaged"))
                #expect(error.message.contains("move \(path) aside"))
                #expect(!error.message.contains("\n"))
            }
        }
    }

    /// Writes run in order on the writer's thread; a full queue refuses (and counts) instead of blocking, and
    /// `drain` waits for what was accepted.
    @Test func theWriterKeepsOrderAndShedsWhenFull() throws {
        let writer = StoreWriter(capacity: 3)
        let gate = DispatchSemaphore(value: 0)
        let log = Log()
        let first = writer.submit({ gate.wait(); log.add(0) })
        let second = writer.submit({ log.add(1) })
        let failing = writer.submit({ throw StoreError(message: "disk full") }, done: { error in log.add(error == nil ? 20 : 21) })
        let fourth = writer.submit({ log.add(9) })
        #expect(first && second && failing)
        #expect(!fourth, "a fourth waiting write is refused")
        #expect(writer.counters.shed == 1 && writer.counters.waiting == 3)
        gate.signal()
        writer.drain()
        #expect(log.values == [0, 1, 21])
        #expect(writer.counters == StoreWriter.Counters(waiting: 0, shed: 1, failed: 1))
        let later = writer.submit({ log.add(3) })
        #expect(later)
        writer.drain()
        #expect(log.values == [0, 1, 21, 3])
    }
}

private final class Log: @unchecked Sendable {
    private let lock = NSLock()
    private var items: [Int] = []
    func add(_ value: Int) { lock.withLock { items.append(value) } }
    var values: [Int] { lock.withLock { items } }
}
