import ArgumentParser
import Dispatch
import Foundation
import Logging
import MeshDaemon

/// `mesh-node run`: a node. Flags override the TOML file; with no file, flags alone run a node.
struct RunCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "run",
        abstract: "Run a node: links, calls, relaying. SIGTERM or SIGINT stops it gracefully.")

    @Option(help: "TOML configuration file (see Configs/node.toml).") var config: String?
    @Option(help: "UDP HOST:PORT to listen on (default 0.0.0.0:4460).") var listen: String?
    @Option(help: "The node's key file (default: DATA_DIR/node.key, created when missing).") var key: String?
    @Option(name: .customLong("wallet"), help: "A hosted wallet key file; repeatable (default: the node's own address).")
    var wallets: [String] = []
    @Option(help: "Passphrase file for protected key files.") var passphraseFile: String?
    @Option(help: "Data directory (default ~/.mesh).") var dataDir: String?
    @Option(help: "Control socket path (default DATA_DIR/control.sock).") var controlSocket: String?
    @Option(name: .customLong("peer"), help: "A neighbour [0xNODEADDR@]HOST:PORT to keep a link with; repeatable.")
    var peers: [String] = []
    @Option(name: .customLong("bootstrap"), help: "A DHT node [0xNODEADDR@]HOST:PORT to join the mesh through; repeatable.")
    var bootstraps: [String] = []
    @Option(name: .customLong("advertise"), help: "An IP:PORT to publish in presence records; repeatable (default: --listen when specific).")
    var advertised: [String] = []
    @Option(help: "What to do with incoming calls: off (decline), record, echo.") var autoAnswer: String?
    @Option(help: "Folder for recorded calls (default DATA_DIR/recordings).") var recordDir: String?
    @Option(help: "Opus bitrate of calls this node places, bit/s (default 24000).") var bitrate: Int?
    @Flag(help: "The speexdsp VAD drives DTX for the audio this node sends (default: Opus's own DTX).") var vad = false
    @Flag(help: "speexdsp noise suppression on the audio this node sends.") var denoise = false
    @Option(help: "Redundant copies against burst loss: auto (default), on, off.") var redundancy: String?
    @Option(help: "UDP socket buffer asked for each way, bytes (default 4194304).") var socketBuffer: Int?
    @Option(help: "Most links a relay chain may have, 1–15 (default 6).") var hopLimit: Int?
    @Option(help: ArgumentHelp("Form links only with this node (0xNODEADDR; repeat for each): a private mesh.", valueName: "node"))
    var allowLink: [String] = []
    @Option(help: "Sessions this node relays at once (default 10000); more set-ups are refused.") var maxSessions: Int?
    @Option(help: "Sessions one neighbour may ask this node to relay (default 1000).") var maxSessionsPerNeighbour: Int?
    @Option(help: "Chain set-ups one neighbour may ask for per second (default 50).") var setupsPerSecond: Int?
    @Option(help: ArgumentHelp("Packets of many sessions to one neighbour share datagrams: on (default) or off.", valueName: "on|off"))
    var trunking: String?
    @Option(help: ArgumentHelp("Calls try a direct path through NATs with ICE, the relay chain kept as fallback: on or off (default).",
                               valueName: "on|off"))
    var direct: String?
    @Option(help: ArgumentHelp("Calls step down and up together as their relays and ends judge the path: on (default) or off.",
                               valueName: "on|off"))
    var qualitySwitching: String?
    @Flag(help: "Reveal no home address: no direct paths for this node's calls, only relays in its presence records.")
    var relayOnly = false
    @Option(help: "Longest wait of a lone packet for others to the same neighbour, ms, 0–20 (default 2).") var trunkHoldMs: Int?
    @Option(help: ArgumentHelp("Serve GET /metrics (Prometheus text format) on this TCP HOST:PORT (default: none).",
                               valueName: "host:port"))
    var metrics: String?
    @Option(help: ArgumentHelp("A TURN server direct-path attempts also use (coturn, long-term credentials; default: none).",
                               valueName: "host:port"))
    var turn: String?
    @Option(help: "The TURN server's user name.") var turnUser: String?
    @Option(help: ArgumentHelp("A file whose first line is the TURN server's password.", valueName: "file")) var turnPasswordFile: String?
    @Option(help: "Log level: trace, debug, info, notice, warning, error.") var logLevel: String = "info"

    func run() throws {
        // Everything the node creates is its owner's alone: node.db and its -wal/-shm files, recordings, keys.
        umask(0o077)
        let settings = try settings()
        guard let level = Logger.Level(rawValue: logLevel) else {
            throw ValidationError("--log-level: expected trace, debug, info, notice, warning or error, got \"\(logLevel)\"")
        }
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = level
            return handler
        }
        let runtime: NodeRuntime
        do {
            runtime = try NodeRuntime.start(config: settings, logger: Logger(label: "mesh-node"))
        } catch {
            throw CLIError("\(error)")
        }
        let signals = [SIGTERM, SIGINT].map { sig in
            signal(sig, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: sig, queue: .global())
            source.setEventHandler { runtime.shutdown() }
            source.resume()
            return source
        }
        runtime.waitUntilStopped()
        signals.forEach { $0.cancel() }
    }

    /// The TOML file (if any) with every given flag applied on top.
    func settings() throws -> NodeConfig {
        do {
            var c = try config.map { (f) throws(ConfigError) in try NodeConfig.load(file: f) } ?? NodeConfig()
            if let listen { c.listen = try HostPort(parsing: listen, what: "--listen") }
            if let key { c.keyFile = key }
            if !wallets.isEmpty { c.walletFiles = wallets }
            if let passphraseFile { c.passphraseFile = passphraseFile }
            if let dataDir { c.dataDir = dataDir }
            if let controlSocket { c.controlSocket = controlSocket }
            if !peers.isEmpty { c.peers = try peers.map { (p) throws(ConfigError) in try PeerSpec(parsing: p, what: "--peer") } }
            if !bootstraps.isEmpty {
                c.bootstrap = try bootstraps.map { (p) throws(ConfigError) in try PeerSpec(parsing: p, what: "--bootstrap") }
            }
            if !advertised.isEmpty { c.advertise = try advertised.map { (a) throws(ConfigError) in try HostPort(parsing: a, what: "--advertise") } }
            if let autoAnswer { c.autoAnswer = try NodeConfig.parseAutoAnswer(autoAnswer, what: "--auto-answer") }
            if let recordDir { c.recordDir = recordDir }
            if let bitrate { c.bitrate = try NodeConfig.checkBitrate(bitrate, what: "--bitrate") }
            if vad { c.vad = true }
            if denoise { c.denoise = true }
            if let redundancy { c.redundancy = try NodeConfig.parseRedundancy(redundancy, what: "--redundancy") }
            if let socketBuffer { c.socketBuffer = try NodeConfig.checkSocketBuffer(socketBuffer, what: "--socket-buffer") }
            if !allowLink.isEmpty { c.allowLinks = try allowLink.map { (s) throws(ConfigError) in try NodeConfig.parseNode(s, what: "--allow-link") } }
            if let metrics { c.metrics = try HostPort(parsing: metrics, what: "--metrics") }
            if let turn { c.turn = try HostPort(parsing: turn, what: "--turn") }
            if let turnUser { c.turnUser = turnUser }
            if let turnPasswordFile { c.turnPasswordFile = turnPasswordFile }
            if let hopLimit { c.hopLimit = try NodeConfig.checkRange(hopLimit, NodeConfig.hopLimits, what: "--hop-limit") }
            if let maxSessions { c.maxSessions = try NodeConfig.checkRange(maxSessions, NodeConfig.sessionLimits, what: "--max-sessions") }
            if let maxSessionsPerNeighbour {
                c.maxSessionsPerNeighbour = try NodeConfig.checkRange(maxSessionsPerNeighbour, NodeConfig.sessionLimits,
                                                                      what: "--max-sessions-per-neighbour")
            }
            if let setupsPerSecond {
                c.setupsPerSecond = try NodeConfig.checkRange(setupsPerSecond, NodeConfig.setupRates, what: "--setups-per-second")
            }
            if let trunking { c.trunking = try NodeConfig.parseSwitch(trunking, what: "--trunking") }
            if let direct { c.directPaths = try NodeConfig.parseSwitch(direct, what: "--direct") }
            if let qualitySwitching { c.qualitySwitching = try NodeConfig.parseSwitch(qualitySwitching, what: "--quality-switching") }
            if relayOnly { c.relayOnly = true }
            if let trunkHoldMs { c.trunkHoldMs = try NodeConfig.checkRange(trunkHoldMs, NodeConfig.trunkHolds, what: "--trunk-hold-ms") }
            return c
        } catch {
            throw CLIError(error.description)
        }
    }
}

/// A one-line error for the user; exit status 1.
struct CLIError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}
