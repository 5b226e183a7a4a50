import ArgumentParser
import Dispatch
import Foundation
import MeshControl
import MeshDaemon
import MeshIdentity
import MeshMedia

/// `mesh-node call 0xADDRESS`: asks the local node to place a call, streams audio in and out, prints a summary.
struct CallCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "call",
        abstract: "Call a wallet address through the local node.",
        discussion: """
            Audio in (--play) and out (--record) is a WAV file, or raw 16-bit 48 kHz mono PCM on stdin/stdout with '-'.
            Without --duration the call lasts as long as the --play input plus one second (to hear the tail of a reply);
            with no input it lasts until the other side hangs up or Ctrl-C. Exit status 0 after a normal hangup.
            """)

    @Argument(help: "The wallet address to call (0x + 40 hex; mixed case must be a valid EIP-55 checksum).")
    var address: String
    @Option(help: "Control socket of the local node (default $MESH_CONTROL_SOCKET or ~/.mesh/control.sock).")
    var controlSocket: String = ControlDefaults.socketPath
    @Option(help: "Audio to send: a WAV file (any common rate or channel count) or '-' for raw PCM on stdin.")
    var play: String?
    @Option(help: "Where to write the received audio: a WAV file or '-' for raw PCM on stdout.")
    var record: String?
    /// Unconditional: "-5" is the (refused) value, not an unknown option.
    @Option(parsing: .unconditional, help: "Seconds to stay in the call after it is answered.") var duration: Double?
    @Option(help: "Which hosted wallet calls (default: the node's first).") var from: String?
    @Option(help: "Opus bitrate in bit/s (default: the node's setting, 24000).") var bitrate: Int?
    @Flag(help: "Print the summary as JSON.") var json = false

    func validate() throws {
        do { _ = try WalletAddress(parsing: address) } catch { throw ValidationError("\(error)") }
        if let duration, !(duration > 0) { throw ValidationError("--duration must be a positive number of seconds") }
        if let bitrate, !(6_000...128_000).contains(bitrate) { throw ValidationError("--bitrate must be 6000–128000 bit/s") }
    }

    func run() throws {
        let source = try AudioSource.open(play)
        let sink = try AudioSink.open(record)
        let session = CallSession(sink: sink)
        let client: ControlClient
        do {
            client = try ControlClient(path: controlSocket) { session.handle($0) }
        } catch {
            throw CLIError("\(error)")
        }
        // Ctrl-C at any point ends the call cleanly (before it is answered too).
        let interrupt = DispatchSource.makeSignalSource(signal: SIGINT, queue: .global())
        signal(SIGINT, SIG_IGN)
        interrupt.setEventHandler { session.interrupt() }
        interrupt.resume()

        var params: [String: JSONValue] = ["to": .string(address)]
        if let from { params["from"] = .string(from) }
        if let bitrate { params["bitrate"] = .number(Double(bitrate)) }
        let placed: JSONValue
        do {
            placed = try client.call("call.place", .object(params))
        } catch {
            throw CLIError("call \(address): \(error)")
        }
        guard let callID = placed["call"]?.stringValue else { throw CLIError("the node gave no call id") }
        session.callID = callID

        let answered = session.waitForAnswer(timeout: 45)
        if answered {
            let limit = duration ?? source.lengthSeconds.map { $0 + 1 }
            stream(source: source, client: client, session: session, limit: limit)
        }
        if !session.isEnded { _ = try? client.call("call.hangup", .object(["call": .string(session.callID ?? callID)]), timeout: 5) }
        let ended = session.waitForEnd(timeout: 10)
        interrupt.cancel()
        client.close()
        sink.close()
        guard let ended else { throw CLIError("call \(callID): the node reported no end of the call") }
        report(ended, placed: placed, setupMs: session.setupMs, transfers: session.transfers)
        if ended["normal"]?.boolValue != true { throw ExitCode(1) }
    }

    /// Sends one 20 ms frame per 20 ms (on an absolute schedule) until the limit, the input's end or the call's end.
    /// The frames go to the session's current call: a transfer moves them to the new one.
    private func stream(source: AudioSource, client: ControlClient, session: CallSession, limit: Double?) {
        let start = DispatchTime.now().uptimeNanoseconds
        var sent = 0
        while !session.isEnded && !session.isInterrupted {
            if let limit, Double(sent * Audio.frameMs) / 1000 >= limit { break }
            guard let frame = source.nextFrame() else {
                // The input ended: without a limit the call ends with it, unless there was no input at all
                // (then it lasts until the other side hangs up or Ctrl-C).
                if limit == nil && source.hasInput { break }
                sent += 1
                pace(start: start, frames: sent)
                continue
            }
            try? client.notify("audio.frame", .object(["call": .string(session.callID ?? ""), "pcm": .string(PCM.base64(frame))]))
            sent += 1
            pace(start: start, frames: sent)
        }
    }

    private func pace(start: UInt64, frames: Int) {
        let due = start + UInt64(frames * Audio.frameMs) * 1_000_000
        let now = DispatchTime.now().uptimeNanoseconds
        if due > now { usleep(UInt32((due - now) / 1000)) }
    }

    private func lost(_ chain: JSONValue?) -> String {
        chain?["role"]?.stringValue == "lost" ? " (lost: no working chain when the call ended)" : ""
    }

    private func switches(_ value: JSONValue?) -> String {
        let count = value?.arrayValue?.count ?? 0
        return count == 0 ? "" : " (moved \(count) time\(count == 1 ? "" : "s") during the call)"
    }

    /// "1.2 s direct, 0.3 s relayed, 1 fallback(s), direct after 105 ms", or "-" without direct paths.
    static func describeDirect(_ direct: JSONValue?) -> String {
        guard let direct, direct != .null else { return "-" }
        func seconds(_ key: String) -> String { String(format: "%.1f", (direct[key]?.doubleValue ?? 0) / 1000) }
        let first = direct["msToDirect"]?.doubleValue.map { ", direct after \(Int($0)) ms" } ?? ", never direct"
        return "\(seconds("msDirect")) s direct, \(seconds("msRelayed")) s relayed, "
            + "\(direct["fallbacks"]?.intValue ?? 0) fallback(s)\(first)"
    }

    /// "normal → catastrophic (relay 0x…: loss 20.1 %), catastrophic → normal (…)", or "no switch".
    static func describeQuality(_ switches: JSONValue?) -> String {
        let list = switches?.arrayValue ?? []
        guard !list.isEmpty else { return "no switch" }
        return list.map { s in
            let (from, to, why) = (s["from"]?.stringValue ?? "?", s["to"]?.stringValue ?? "?", s["why"]?.stringValue ?? "")
            return "\(from) → \(to) (\(why))"
        }.joined(separator: "; ")
    }

    private func report(_ ended: JSONValue, placed: JSONValue, setupMs: JSONValue?, transfers: [String]) {
        let summary = ended["summary"] ?? .object([:])
        let media = summary["media"] ?? .object([:])
        var out: [String: JSONValue] = [
            "call": placed["call"] ?? .null, "from": placed["from"] ?? .null, "peer": placed["to"] ?? .null,
            "via": placed["via"] ?? .null, "path": summary["path"] ?? .null, "reason": ended["reason"] ?? .null,
            "durationS": summary["durationS"] ?? .null, "codec": media["codec"] ?? .null, "bitrate": media["bitrate"] ?? .null,
            "packetsSent": media["packetsSent"] ?? .null, "packetsReceived": media["packetsReceived"] ?? .null,
            "packetsLost": media["packetsLost"] ?? .null, "packetsLate": media["packetsLate"] ?? .null,
            "meanPlayoutDelayMs": media["meanPlayoutDelayMs"] ?? .null, "jitterMs": media["jitterMs"] ?? .null,
        ]
        if let setupMs { out["setupMs"] = setupMs }
        // The chain the call ended on (active first), its standby, and any moves between chains.
        let chains = summary["chains"]?.arrayValue ?? []
        out["chain"] = chains.first ?? .null
        out["standby"] = chains.first { $0["role"]?.stringValue == "standby" } ?? .null
        out["chainSwitches"] = summary["chainSwitches"] ?? .array([])
        // With direct paths on: time on each path, attempts and fallbacks (docs/calls.md, "Direct paths").
        if let direct = summary["direct"] { out["direct"] = direct }
        // The quality tier's moves during the call (docs/calls.md, "Quality").
        out["qualitySwitches"] = summary["control"]?["quality"]?["switches"] ?? .array([])
        // A blind transfer: the calls it moved to, and the wallet the call ended with.
        if !transfers.isEmpty {
            out["transferredTo"] = .array(transfers.map(JSONValue.string))
            out["endedWith"] = summary["remote"] ?? .null
        }
        let text: String
        if json {
            text = JSONValue.object(out).prettyText()
        } else {
            func f(_ key: String) -> String {
                switch out[key] {
                case .number(let n)?: n.rounded() == n ? String(Int(n)) : String(format: "%.1f", n)
                case .string(let s)?: s
                default: "-"
                }
            }
            text = """
                call        \(f("call"))  \(f("from")) → \(f("peer"))
                path        \(f("path"))
                chain       \(out["chain"].map(ChainText.describe) ?? "-")\(lost(out["chain"]))\(switches(out["chainSwitches"]))
                direct      \(Self.describeDirect(out["direct"]))
                ended       \(f("reason")) after \(f("durationS")) s (setup \(f("setupMs")) ms)
                codec       \(f("codec")) at \(f("bitrate")) bit/s
                packets     sent \(f("packetsSent")), received \(f("packetsReceived")), lost \(f("packetsLost")), late \(f("packetsLate"))
                playout     mean delay \(f("meanPlayoutDelayMs")) ms, jitter \(f("jitterMs")) ms
                quality     \(Self.describeQuality(out["qualitySwitches"]))
                """ + (transfers.isEmpty ? "" : "\ntransferred to \(f("endedWith")) (call \(transfers.joined(separator: ", ")))")
        }
        let toStderr = record == "-"
        FileHandle(fileDescriptor: toStderr ? 2 : 1).write(Data((text + "\n").utf8))
    }
}
