#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Foundation
import MeshIdentity

/// One decoder under fuzzing (docs/fuzzing.md): what a single input does, and seed inputs made by the project's
/// own encoders. `run` must not crash for any input; a property it checks (a round trip, say) is a `precondition`,
/// so a violation is a crash libFuzzer keeps.
struct FuzzTarget: Sendable {
    let name: String
    let run: @Sendable ([UInt8]) -> Void
    let seeds: @Sendable () -> [[UInt8]]

    static let all = [
        FuzzTarget(name: "link", run: LinkFuzz.run, seeds: LinkFuzz.seeds),
        FuzzTarget(name: "app", run: AppFuzz.run, seeds: AppFuzz.seeds),
        FuzzTarget(name: "call", run: CallFuzz.run, seeds: CallFuzz.seeds),
        FuzzTarget(name: "gossip", run: GossipFuzz.run, seeds: GossipFuzz.seeds),
        FuzzTarget(name: "dht", run: DHTFuzz.run, seeds: DHTFuzz.seeds),
        FuzzTarget(name: "presence", run: PresenceFuzz.run, seeds: PresenceFuzz.seeds),
        FuzzTarget(name: "rtp", run: RTPFuzz.run, seeds: RTPFuzz.seeds),
        FuzzTarget(name: "redundancy", run: RedundancyFuzz.run, seeds: RedundancyFuzz.seeds),
        FuzzTarget(name: "wav", run: WAVFuzz.run, seeds: WAVFuzz.seeds),
        FuzzTarget(name: "trace", run: TraceFuzz.run, seeds: TraceFuzz.seeds),
        FuzzTarget(name: "config", run: ConfigFuzz.run, seeds: ConfigFuzz.seeds),
        FuzzTarget(name: "rpc", run: RPCFuzz.run, seeds: RPCFuzz.seeds),
        FuzzTarget(name: "stun", run: StunFuzz.run, seeds: StunFuzz.seeds),
    ]

    static func named(_ name: String) -> FuzzTarget? { all.first { $0.name == name } }
}

/// What the targets share: a fixed clock and fixed keys (inputs replay exactly), and framing of several
/// messages in one input for the targets that feed a state machine.
enum Fuzz {
    /// The wall clock every stateful target runs at; seeds carry timestamps of this time.
    static let nowMs: Int64 = 1_800_000_000_000

    /// The node key of the node under test.
    static let nodeKey = key(1)
    /// A neighbour's node key (it signs the seeds' link handshakes and DHT datagrams).
    static let peerKey = key(2)
    /// The wallet the node under test hosts, and a remote wallet.
    static let walletKey = key(3)
    static let remoteWalletKey = key(4)

    static func key(_ n: UInt8) -> PrivateKey {
        do {
            return try PrivateKey(bytes: [UInt8](repeating: 0, count: 31) + [n])
        } catch {
            fatalError("a small scalar is a valid secp256k1 key: \(error)")
        }
    }

    /// Splits an input into messages: each is a 2-byte big-endian length and that many bytes (the last one
    /// takes what is left when the input is shorter).
    static func messages(_ input: [UInt8]) -> [[UInt8]] {
        var messages: [[UInt8]] = []
        var index = 0
        while index + 2 <= input.count {
            let length = Int(input[index]) << 8 | Int(input[index + 1])
            let end = min(index + 2 + length, input.count)
            messages.append(Array(input[index + 2..<end]))
            index = end
        }
        return messages
    }

    /// The input that `messages` splits back into `messages`.
    static func framed(_ messages: [[UInt8]]) -> [UInt8] {
        messages.flatMap { [UInt8(truncatingIfNeeded: $0.count >> 8), UInt8(truncatingIfNeeded: $0.count)] + $0 }
    }

    /// A file of this process for decoders that read files (`suffix` tells them apart); in memory when it can be,
    /// as rewriting a file on disk thousands of times a second waits for the disk.
    static func scratchPath(_ suffix: String) -> String {
        let directory = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp"
        return "\(directory)/mesh-fuzz-\(getpid())\(suffix)"
    }

    /// Writes `bytes` to the scratch file with `suffix` and returns its path.
    static func scratchFile(_ bytes: [UInt8], suffix: String) -> String { write(bytes, to: scratchPath(suffix)) }

    /// Writes `bytes` to `path` and returns the path.
    static func write(_ bytes: [UInt8], to path: String) -> String {
        guard let file = fopen(path, "wb") else { fatalError("cannot write \(path)") }
        _ = bytes.withUnsafeBufferPointer { fwrite($0.baseAddress, 1, $0.count, file) }
        fclose(file)
        return path
    }

    /// The repository's root, for seeds taken from its example files and for the regression inputs.
    static let repository = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent()

    static func contents(_ path: String) -> [UInt8] {
        guard let data = FileManager.default.contents(atPath: path) else { fatalError("cannot read \(path)") }
        return Array(data)
    }
}
