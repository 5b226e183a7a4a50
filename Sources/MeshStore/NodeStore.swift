import Foundation
import GRDB
import MeshDHT
import MeshIdentity

/// A problem with the node's database, as one line for the operator.
public struct StoreError: Error, CustomStringConvertible, Sendable {
    public let message: String
    public var description: String { message }
}

/// The node's durable state in SQLite (GRDB, WAL): routing-table contacts, records held for others, and
/// the node's own sequence numbers. Writes are synchronous: when a call returns, the state survives a kill. The
/// node makes them on a `StoreWriter`'s thread, never on its event loop.
/// Schema and recovery: docs/storage.md.
public final class NodeStore: Sendable {
    public let path: String
    private let db: DatabasePool

    /// Opens (creating and migrating) the database; a damaged file gives a clear error, never a crash.
    public init(path: String) throws(StoreError) {
        self.path = path
        let rebuild = "stop the node and move \(path) aside (or delete it) to rebuild: the node re-learns contacts and records from the mesh"
        do {
            var configuration = Configuration()
            configuration.busyMode = .timeout(5)
            db = try DatabasePool(path: path, configuration: configuration)
            let check = try db.read { try String.fetchOne($0, sql: "PRAGMA quick_check") }
            guard check == "ok" else { throw StoreError(message: "database \(path) is damaged (\(check ?? "no answer")); \(rebuild)") }
            try Self.migrator.migrate(db)
        } catch let error as StoreError {
            throw error
        } catch let error as DatabaseError {
            throw StoreError(message: "database \(path) is damaged or unreadable (\(error.message ?? "\(error.resultCode)")); \(rebuild)")
        } catch {
            throw StoreError(message: "database \(path): \(error); \(rebuild)")
        }
    }

    static let migrator: DatabaseMigrator = {
        var m = DatabaseMigrator()
        m.registerMigration("v1") { db in
            try db.execute(sql: """
                CREATE TABLE contacts (id BLOB PRIMARY KEY NOT NULL, endpoint TEXT NOT NULL, last_seen_ms INTEGER NOT NULL);
                CREATE TABLE records (key BLOB PRIMARY KEY NOT NULL, wallet TEXT NOT NULL, sequence INTEGER NOT NULL,
                                      expires_at_ms INTEGER NOT NULL, body BLOB NOT NULL);
                CREATE INDEX records_expiry ON records (expires_at_ms);
                CREATE TABLE counters (name TEXT PRIMARY KEY NOT NULL, value INTEGER NOT NULL);
                """)
        }
        return m
    }()

    // MARK: contacts

    /// Changes the stored routing table by what changed since the last save: `added` contacts are written (or
    /// their endpoint updated), `removed` ones deleted, in one transaction.
    public func updateContacts(added: [Contact], removed: [Contact], nowMs: Int64) throws(StoreError) {
        try write { db in
            for c in removed {
                try db.execute(sql: "DELETE FROM contacts WHERE id = ? AND endpoint = ?", arguments: [Data(c.id.bytes), c.endpoint.description])
            }
            for c in added {
                try db.execute(sql: "INSERT OR REPLACE INTO contacts (id, endpoint, last_seen_ms) VALUES (?, ?, ?)",
                               arguments: [Data(c.id.bytes), c.endpoint.description, nowMs])
            }
        }
    }

    public func contacts() throws(StoreError) -> [Contact] {
        try read { db in
            try Row.fetchAll(db, sql: "SELECT id, endpoint FROM contacts ORDER BY last_seen_ms DESC").compactMap { row in
                let id: Data = row["id"]
                let endpoint: String = row["endpoint"]
                guard let nodeID = NodeID(bytes: Array(id)), let ep = DHTEndpoint(parsing: endpoint) else { return nil }
                return Contact(id: nodeID, endpoint: ep)
            }
        }
    }

    // MARK: records

    /// Stores a record (replacing an older sequence for the same key) before it is acknowledged.
    public func saveRecord(_ record: PresenceRecord) throws(StoreError) {
        try write { db in
            try db.execute(sql: """
                INSERT INTO records (key, wallet, sequence, expires_at_ms, body) VALUES (?, ?, ?, ?, ?)
                ON CONFLICT(key) DO UPDATE SET wallet = excluded.wallet, sequence = excluded.sequence,
                    expires_at_ms = excluded.expires_at_ms, body = excluded.body
                WHERE excluded.sequence >= records.sequence
                """, arguments: [Data(record.key.bytes), record.wallet.checksummed, Int64(bitPattern: record.sequence),
                                 record.expiresAtMs, Data(record.serialize())])
        }
    }

    public func deleteRecord(key: NodeID) throws(StoreError) {
        try write { db in try db.execute(sql: "DELETE FROM records WHERE key = ?", arguments: [Data(key.bytes)]) }
    }

    /// Records that have not expired; expired ones are deleted on the way.
    public func records(nowMs: Int64) throws(StoreError) -> [PresenceRecord] {
        try write { db in
            try db.execute(sql: "DELETE FROM records WHERE expires_at_ms <= ?", arguments: [nowMs])
            return try Data.fetchAll(db, sql: "SELECT body FROM records ORDER BY key").compactMap { PresenceRecord(parsing: Array($0)) }
        }
    }

    // MARK: counters

    /// Increments a named counter (e.g. a wallet's record sequence) and returns the new value.
    /// It never goes below `atLeast`, so a wiped database still yields numbers above any the mesh saw.
    public func nextValue(_ name: String, atLeast: UInt64 = 1) throws(StoreError) -> UInt64 {
        try write { db in
            let current = try Int64.fetchOne(db, sql: "SELECT value FROM counters WHERE name = ?", arguments: [name]) ?? 0
            let next = max(UInt64(bitPattern: current) + 1, atLeast)
            try db.execute(sql: "INSERT OR REPLACE INTO counters (name, value) VALUES (?, ?)", arguments: [name, Int64(bitPattern: next)])
            return next
        }
    }

    // MARK: plumbing

    private func write<T>(_ body: (Database) throws -> T) throws(StoreError) -> T {
        do { return try db.write(body) } catch { throw StoreError(message: "database \(path): write failed (\(error))") }
    }

    private func read<T>(_ body: (Database) throws -> T) throws(StoreError) -> T {
        do { return try db.read(body) } catch { throw StoreError(message: "database \(path): read failed (\(error))") }
    }
}
