import Foundation
import Logging
import MeshCall
import MeshControl
import MeshDHT
import MeshICE
import MeshIdentity
import MeshLink
import MeshMedia
import MeshNodeCore
import MeshRouting
import MeshStore
import MeshStun
import MeshWire
import NIOCore
import NIOPosix

/// Counters for input the shell dropped (the core counts its own: `NodeCoreCounters`).
public struct NodeCounters: Sendable, Codable, Equatable {
    public var mediaUnknownCall = 0
    /// Datagrams the kernel refused to send (a firewall, no route, a full socket buffer); each is dropped alone.
    public var sendFailed = 0
    /// Direct paths (docs/calls.md): ICE attempts started, attempts that carried media, moves back to the chain,
    /// ICE messages dropped for a wrong MAC, and the sum over calls of the time from answer to the direct path.
    public var directAttempts = 0
    public var directSuccesses = 0
    public var directFallbacks = 0
    public var iceBadMac = 0
    public var msToDirectTotal = 0
    /// Call control (docs/calls.md): control messages whose MAC was wrong, quelch notices refused (malformed,
    /// another call's, a signer not on the path, or a replay).
    public var controlBadMac = 0
    public var quelchRefused = 0
    /// Quality verdicts refused (malformed, another call's, a signer not on the path, or a replay).
    public var verdictRefused = 0
}

/// A running node: one UDP port, the node's protocol logic (`NodeCore`), per-call media, and the control socket.
/// Every piece of state lives on one event loop; the core is pure and this class is its shell: it feeds it
/// datagrams, commands and ticks, and carries out what it asks (datagrams out, media, clients, the database).
public final class NodeRuntime: @unchecked Sendable {
    public let config: NodeConfig
    public let nodeKey: PrivateKey
    let logger: Logger
    let group: MultiThreadedEventLoopGroup
    let loop: EventLoop
    /// Links, gossip, forwarding with trunks, calls, the DHT, the resolver, and the glue between them.
    var core: NodeCore<SocketAddress>
    /// What the core wrote in this turn: datagrams (sent when the turn ends) and events (`handleEvents`).
    var output = NodeOutput()
    /// The events being handled, and whether they are (the buffers are swapped, not reallocated).
    private var eventBatch: [NodeEvent<SocketAddress>] = []
    private var handlingEvents = false
    /// The pending trunk-hold timer and its deadline (monotonic µs).
    var trunkTimer: (task: Scheduled<Void>, deadline: Int64)?
    /// Whether the end of this turn of the event loop is scheduled (`endTurnSoon`).
    var turnEnding = false
    /// Callers waiting for a home node (`route.explain`) and for calls being placed, by what the core answers.
    var resolving: [HomeResolver<SocketAddress>.ID: EventLoopPromise<Home>] = [:]
    var placing: [CallID: Placing] = [:]
    let store: NodeStore
    /// Every database write and recording append runs here, off the event loop (docs/storage.md).
    let writer = StoreWriter()
    /// Signs relays' quality verdicts off the event loop, in order (docs/architecture.md, "Isolation model").
    let verdictSigner = DispatchQueue(label: "verdict-signer", qos: .utility)
    let wallets: [PrivateKey]
    var lookups: [LookupID: EventLoopPromise<LookupOutcome>] = [:]
    var nextContactSave: Int64 = 0
    var savedContacts: Set<Contact> = []
    var media: [CallID: CallMedia] = [:]
    /// Each answered call's direct path, with direct paths on; kept while the call is remembered.
    var directs: [CallID: DirectPath] = [:]
    /// The configured TURN server direct-path attempts gather relayed candidates from (`turn`), resolved at start.
    var turnServer: TURNServer?
    /// The latest calls' times from answer to first media on the direct path, ms (at most `directTimesKept`).
    var directTimes: [Int64] = []
    static let directTimesKept = 1_000
    /// Each answered call's control channel (hold, mute, quelch, transfer), while it lasts.
    var controls: [CallID: ControlChannel] = [:]
    /// Calls placed for a blind transfer → the call they replace once answered.
    var transfers: [CallID: CallID] = [:]
    /// The counter of this node's latest signed notice or verdict (`nextNoticeCounter`).
    var noticeCounter: UInt64 = 0
    var finished: [CallID: CallMediaStats] = [:]
    /// The media figures of every call that ended, for the node-wide media counters (docs/metrics.md).
    var endedMedia = MediaTotals()
    var owners: [CallID: ControlConnection] = [:]
    var setupStarted: [CallID: Int64] = [:]
    /// Calls whose recording failed (logged once).
    var failedRecordings: Set<CallID> = []
    /// Each call's chains as last seen and the switches between them, kept while the call is remembered.
    var chainHistory: [CallID: ChainHistory] = [:]
    var counters = NodeCounters()
    /// Answers STUN Binding Requests on the node's port (docs/stun.md).
    var stun = StunResponder(nowMs: NodeRuntime.now())
    /// The thread reading the node's UDP port; nil once the node stops (or the socket failed).
    var udp: UDPReader?
    var udpSocket: UDPSocket?
    var control: ControlServer?
    /// The `--metrics` HTTP endpoint (docs/metrics.md), when asked for.
    var metricsServer: Channel?
    let startedAt: Int64
    private let stopped: EventLoopPromise<Void>

    /// The core timer (`armCoreTimer`) and its deadline.
    var coreTimer: (task: Scheduled<Void>, at: Int64)?
    /// Whether the media tick is running (`startMediaTick`).
    var mediaTicking = false

    /// The cores, read (every change goes through `core`'s commands, so the glue sees it).
    var links: LinkManager<SocketAddress> { core.links }
    var calls: CallEngine { core.calls }
    var gossip: GossipEngine { core.gossip }
    var relay: RelayEngine { core.relay }
    var dht: DHTNode { core.dht }

    /// A seed for the DHT's generator (its ids): the system CSPRNG mixed with the clock.
    static func seed(now: Int64) -> UInt64 {
        UInt64(bitPattern: now) ^ (UInt64(SecureRandom.uint32()) << 32 | UInt64(SecureRandom.uint32()))
    }

    /// The node's clock for everything but what is signed, shown as a time of day or stored: ms, the wall clock's
    /// reading when first read, then moving with the monotonic clock, so an NTP step moves no timer, RTT or playout
    /// deadline (docs/architecture.md, "Clocks").
    static func now() -> Int64 { clockBase.ms + Int64((NIODeadline.now().uptimeNanoseconds - clockBase.uptimeNs) / 1_000_000) }

    /// `now()` for the core, with the monotonic µs its trunk holds go by (one reading of the clock).
    static func time() -> NodeTime {
        let uptime = NIODeadline.now().uptimeNanoseconds
        return NodeTime(ms: clockBase.ms + Int64((uptime - clockBase.uptimeNs) / 1_000_000), us: Int64(uptime / 1_000))
    }

    private static let clockBase = (ms: wallNow(), uptimeNs: NIODeadline.now().uptimeNanoseconds)

    /// Wall-clock Unix ms: for signed timestamps, expiries, stored times and times of day (cores get it as an offset,
    /// `syncClocks`).
    static func wallNow() -> Int64 { Int64(Date().timeIntervalSince1970 * 1000) }

    /// The wall clock as an offset from `now()`, handed to every core on the link tick. A step of a second or more
    /// (NTP, `date -s`) is logged: it moves signed timestamps, not timers.
    func syncClocks() {
        let clock = WallClock(offsetMs: Self.wallNow() - Self.now())
        let step = clock.offsetMs - links.clock.offsetMs
        if abs(step) >= Self.clockStepLoggedMs {
            logger.notice("wall clock stepped", metadata: ["by-ms": "\(step > 0 ? "+" : "")\(step)"])
        }
        core.setClock(clock)
    }

    static let clockStepLoggedMs: Int64 = 1_000

    /// The next counter for a signed quelch notice or quality verdict: it must grow, across restarts too, so it is
    /// the wall clock in ms once that is ahead.
    func nextNoticeCounter() -> UInt64 {
        noticeCounter = max(noticeCounter + 1, UInt64(max(Self.wallNow(), 0)))
        return noticeCounter
    }

    /// A monotonic clock in µs, for timers that must not jump with the wall clock.
    static func monotonicUs() -> Int64 { Int64(NIODeadline.now().uptimeNanoseconds / 1_000) }

    init(config: NodeConfig, nodeKey: PrivateKey, wallets: [PrivateKey], store: NodeStore, logger: Logger,
         group: MultiThreadedEventLoopGroup) throws {
        self.config = config
        self.nodeKey = nodeKey
        self.wallets = wallets
        self.store = store
        self.logger = logger
        let now = Self.now()
        self.group = group
        loop = group.next()
        var coreConfig = NodeCoreConfig()
        coreConfig.hopLimit = config.hopLimit
        coreConfig.trunking = config.trunking
        coreConfig.trunk.holdUs = Int64(config.trunkHoldMs) * 1_000
        coreConfig.answersCalls = config.autoAnswer != .off
        coreConfig.relayOnly = config.relayOnly
        // Gossip sequence numbers must grow across restarts: the clock's seconds do.
        core = NodeCore(nodeKey: nodeKey, hosted: wallets, config: coreConfig, linkConfig: config.linkConfig, gossipConfig: config.gossipConfig,
                        relayConfig: config.relayConfig, random: .secure, dhtSeed: Self.seed(now: now),
                        sequence: UInt32(truncatingIfNeeded: Self.wallNow() / 1000), now: now)
        let storedContacts = try store.contacts()
        core.dht.restore(contacts: storedContacts, records: try store.records(nowMs: Self.wallNow()), nowMs: now)
        startedAt = now
        stopped = loop.makePromise()
        // The contacts table is saved as what changed since this (docs/storage.md).
        savedContacts = Set(storedContacts)
        syncClocks()
    }

    /// Loads keys and state, binds the UDP port and the control socket, dials the configured peers.
    public static func start(config: NodeConfig, logger: Logger) throws -> NodeRuntime {
        // Every input is checked before anything is created: a host that does not resolve, or a port that cannot be
        // bound (the UDP port, then the metrics port; both stay bound), leaves no key, data dir or db.
        let endpoints = try Endpoints(config)
        let socket: UDPSocket
        do {
            socket = try UDPSocket(binding: endpoints.listen, bufferBytes: config.socketBuffer)
        } catch {
            throw ConfigError("listen \(config.listen): cannot bind UDP (\(describeBindError(error)))")
        }
        // Closed here if start fails before SwiftNIO took the socket over (`bind`).
        var socketHandedOver = false
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        // Scrapes that come before the node is up wait for it.
        let started = group.next().makePromise(of: NodeRuntime.self)
        var metricsServer: Channel?
        do {
            if let address = endpoints.metrics, let metrics = config.metrics {
                do {
                    metricsServer = try MetricsServer.bind(address, group: group) {
                        started.futureResult.flatMap { runtime in runtime.loop.submit { runtime.metricsSnapshot() } }
                    }
                } catch {
                    throw ConfigError("metrics \(metrics): cannot bind TCP (\(describeBindError(error)))")
                }
            }
            let (nodeKey, wallets) = try NodeKeys.load(config: config)
            do {
                try FileManager.default.createDirectory(atPath: config.dataDir, withIntermediateDirectories: true,
                                                        attributes: [.posixPermissions: 0o700])
            } catch {
                throw ConfigError("data dir \(config.dataDir): cannot create (\(error.localizedDescription))")
            }
            let store = try NodeStore(path: config.dataDir + "/node.db")
            let runtime = try NodeRuntime(config: config, nodeKey: nodeKey, wallets: wallets, store: store, logger: logger, group: group)
            runtime.metricsServer = metricsServer
            do {
                socketHandedOver = true
                try runtime.bind(endpoints, socket: socket)
            } catch {
                runtime.stopped.succeed(())
                throw error
            }
            started.succeed(runtime)
            return runtime
        } catch {
            started.fail(error)
            if !socketHandedOver { socket.close() }
            try? metricsServer?.close().wait()
            try? group.syncShutdownGracefully()
            throw error
        }
    }

    /// The addresses the config names, resolved.
    struct Endpoints {
        let listen: SocketAddress
        let peers: [(address: SocketAddress, pinned: WalletAddress?)]
        let bootstrap: [SocketAddress]
        let advertise: [SocketAddress]
        let metrics: SocketAddress?
        let turn: TURNServer?

        init(_ config: NodeConfig) throws(ConfigError) {
            listen = try NodeRuntime.resolve(config.listen, what: "listen \(config.listen)")
            peers = try config.peers.map { (peer) throws(ConfigError) in (try NodeRuntime.resolve(peer.endpoint, what: "peer \(peer)"), peer.pinned) }
            bootstrap = try config.bootstrap.map { (b) throws(ConfigError) in try NodeRuntime.resolve(b.endpoint, what: "bootstrap \(b)") }
            advertise = try config.advertise.map { (a) throws(ConfigError) in try NodeRuntime.resolve(a, what: "advertise \(a)") }
            metrics = try config.metrics.map { (m) throws(ConfigError) in try NodeRuntime.resolve(m, what: "metrics \(m)") }
            turn = try NodeRuntime.turnServer(config)
        }
    }

    /// "Address already in use" for an `IOError`, else the error as it describes itself.
    private static func describeBindError(_ error: any Error) -> String {
        (error as? IOError).map { String(cString: strerror($0.errnoCode)) } ?? "\(error)"
    }

    /// Starts reading the bound UDP socket (a `UDPReader` thread), starts the control socket and dials the
    /// configured peers.
    private func bind(_ endpoints: Endpoints, socket: UDPSocket) throws {
        turnServer = endpoints.turn
        udpSocket = socket
        core.bound = socket.localAddress
        let reader = UDPReader(socket: socket)
        udp = reader
        // The wake captures the runtime alone (a closure of one reference allocates no context).
        reader.start(wake: {
            self.loop.execute { self.drainUDP() }
        }, failed: { code in
            self.loop.execute {
                guard self.udp != nil else { return }
                self.udp = nil
                self.logger.error("UDP socket failed; the node can no longer send or receive",
                                  metadata: ["error": "\(String(cString: strerror(code)))"])
            }
        })
        logSocketBuffers(socket)
        do {
            control = try ControlServer.start(path: config.resolvedControlSocket, on: group, service: self)
        } catch {
            udp?.stop()
            udp = nil
            socket.close()
            throw ConfigError("control socket \(config.resolvedControlSocket): \(error)")
        }
        let peerTargets = endpoints.peers
        let bootstrap = endpoints.bootstrap
        let advertise = endpoints.advertise
        try loop.submit {
            self.withCore { core, now, out in
                for (address, pinned) in peerTargets { core.connect(to: address, pinned: pinned, now: now, into: &out) }
                core.join(bootstrap: (bootstrap + peerTargets.map(\.0)).compactMap(DHTEndpoint.init(socketAddress:)),
                          advertise: advertise.compactMap(DHTEndpoint.init(socketAddress:)), now: now, into: &out)
            }
            self.logger.info("node up", metadata: [
                "node": "\(self.nodeKey.address)", "listen": "\(self.localEndpoint)", "control": "\(self.config.resolvedControlSocket)",
                "wallets": "\(self.calls.hostedWallets.map(\.checksummed).joined(separator: ","))",
                "auto-answer": "\(self.config.autoAnswer.rawValue)",
            ])
            if let address = self.metricsAddress { self.logger.info("metrics endpoint", metadata: ["address": "\(address)"]) }
            self.armCoreTimer()
        }.wait()
    }

    private func logSocketBuffers(_ socket: UDPSocket) {
        guard let status = socket.status() else { return }
        // The kernel reports twice the size set (its bookkeeping overhead); less than that means it capped the request.
        let granted = status.receiveBufferBytes >= 2 * config.socketBuffer
        let metadata: Logger.Metadata = ["receive": "\(status.receiveBufferBytes)", "send": "\(status.sendBufferBytes)",
                                         "asked": "\(config.socketBuffer)"]
        if granted {
            logger.info("UDP socket buffers", metadata: metadata)
        } else {
            logger.warning("UDP socket buffers smaller than asked (run as root or raise net.core.rmem_max)", metadata: metadata)
        }
    }

    public var localEndpoint: String { udpSocket?.localAddress.map(Self.describe) ?? config.listen.description }

    /// Where the metrics endpoint listens (the port the kernel chose for port 0), when there is one.
    var metricsAddress: String? { metricsServer?.localAddress.map(Self.describe) }

    /// Blocks until `shutdown()` has finished and every queued write is done (before the event loop goes: a write's
    /// completion may still hop to it).
    public func waitUntilStopped() {
        try? stopped.futureResult.wait()
        writer.drain()
        try? group.syncShutdownGracefully()
    }

    /// Graceful stop: hang up every call (telling the peers), close the control socket and the port.
    public func shutdown() {
        loop.execute {
            self.withCore { $0.leave(now: $1, into: &$2) }
            self.saveContacts()
            self.flushOutbox()
            self.control?.close()
            self.metricsServer?.close(promise: nil)
            self.logger.info("node stopped")
            let (reader, socket) = (self.udp, self.udpSocket)
            self.udp = nil
            // The reader thread takes up to its poll timeout to notice; the event loop does not wait for it.
            DispatchQueue.global().async {
                reader?.stop()
                socket?.close()
                self.stopped.succeed(())
            }
        }
    }

    // MARK: timers

    /// The earliest deadline of the core and of the shell's own upkeep (docs/architecture.md, "Clocks"). Read at
    /// the end of every turn.
    var nextDeadline: Int64 { min(core.nextDeadline ?? .max, nextContactSave) }

    /// Makes sure the core timer fires by `nextDeadline`: run at the end of every turn and after every core tick.
    func armCoreTimer() {
        guard udp != nil else { return }
        let next = nextDeadline
        if let armed = coreTimer, armed.at <= next { return }
        coreTimer?.task.cancel()
        let now = Self.now()
        let delay = next <= now ? 0 : next - now
        coreTimer = (loop.scheduleTask(in: .milliseconds(delay)) { self.coreTick() }, next)
    }

    /// Ticks the cores whose deadline came (and the shell's upkeep), then arms the timer for the next one.
    private func coreTick() {
        coreTimer = nil
        guard udp != nil else { return }
        syncClocks()
        withCore { $0.tick(now: $1, into: &$2) }
        let now = Self.now()
        if now >= nextContactSave {
            nextContactSave = now + Self.contactSaveMs
            saveContacts()
            forgetEndedCalls()
        }
        armCoreTimer()
    }

    /// Media runs on a fixed 20 ms grid (deadlines, not delays, so it does not drift) while there is work for it:
    /// a call's media, the control channel of an active call, a direct path not ended. A node without calls sleeps.
    func startMediaTick() {
        guard !mediaTicking, udp != nil else { return }
        mediaTicking = true
        scheduleMediaTick(deadline: .now())
    }

    private var mediaBusy: Bool {
        !media.isEmpty || controls.keys.contains { calls.calls[$0]?.state == .active } || directs.values.contains { $0.endedAt == nil }
    }

    private func scheduleMediaTick(deadline: NIODeadline) {
        let next = deadline + .milliseconds(Int64(Audio.frameMs))
        loop.scheduleTask(deadline: next) {
            guard self.udp != nil, self.mediaBusy else {
                self.mediaTicking = false
                return
            }
            self.mediaTick(nowMs: Self.now())
            let late = NIODeadline.now() - next > .milliseconds(200)
            self.scheduleMediaTick(deadline: late ? .now() : next)
        }
    }

    private func mediaTick(nowMs: Int64) {
        directTick(now: nowMs)
        controlTick(now: nowMs)
        for (id, m) in media {
            do {
                if let packet = try m.outbound() { sendMedia(id, packet, now: nowMs) }
            } catch {
                logger.warning("media encode failed", metadata: ["call": "\(id)", "error": "\(error)"])
            }
            let frame = m.playout(nowMs: nowMs)
            switch m.sink {
            case .client:
                owners[id]?.notifyIfWritable(method: "audio.frame", params: .object([
                    "call": .string(id.description), "pcm": .string(PCM.base64(frame)),
                ]))
            case .recorder(let recording, _):
                let (logger, loop) = (logger, loop)
                writer.submit({ try recording.append(frame) }, done: { error in
                    guard let error else { return }
                    // Once per call: the recording stops with its first failure.
                    loop.execute {
                        guard case .recorder? = self.media[id]?.sink, !self.failedRecordings.contains(id) else { return }
                        self.failedRecordings.insert(id)
                        logger.warning("recording failed", metadata: ["call": "\(id)", "error": "\(error)"])
                    }
                })
            case .echo:
                break
            }
        }
    }

    // MARK: inputs

    /// What the reader has read, a bounded share at a time: when more is ready, the next share waits behind what
    /// the loop queued meanwhile (the end of this turn, timers).
    private func drainUDP() {
        endTurnSoon()
        guard let udp, udp.drain(receive) else { return }
        loop.execute { self.drainUDP() }
    }

    /// One batch read from the node's port.
    private func receive(_ batch: UDPReader.Batch) {
        for (i, source) in batch.sources.enumerated() { receive(batch.datagram(i), from: source) }
    }

    /// A datagram where it lies in its batch: link datagrams are read in place (forwarding one allocates nothing);
    /// STUN and DHT datagrams are copied out for their layers.
    private func receive(_ datagram: UnsafeRawBufferPointer, from source: SocketAddress) {
        guard let first = datagram.first, first > 3, first != DHTWire.marker else {
            receive(datagram: Array(datagram), from: source)
            return
        }
        core.receive(link: datagram, from: source, now: Self.time(), into: &output)
        if !output.events.isEmpty { handleEvents() }
    }

    /// The node's port carries link datagrams (0xE1–0xE3), DHT datagrams (0xE4) and STUN (0–3, RFC 7983).
    func receive(datagram: [UInt8], from source: SocketAddress) {
        if let first = datagram.first, first <= 3 {
            receiveStun(datagram, from: source)
        } else {
            withCore { $0.receive(datagram, from: source, now: $1, into: &$2) }
        }
    }

    /// Runs a command on the core as part of this turn of the event loop, then what it asked of the shell.
    @discardableResult
    func withCore<R>(_ body: (inout NodeCore<SocketAddress>, NodeTime, inout NodeOutput) -> R) -> R {
        endTurnSoon()
        let result = body(&core, Self.time(), &output)
        handleEvents()
        return result
    }

    /// Queues a datagram; everything queued in one turn of the event loop (a batch of reads, a timer) leaves
    /// together when the turn ends, in as few sendmmsg calls as the kernel allows (docs/forwarding.md, "Batches").
    func sendDatagram(_ bytes: [UInt8], to address: SocketAddress) {
        guard udp != nil else { return }
        endTurnSoon()
        output.outbox.append(bytes, to: address)
    }

    /// Makes sure `endTurn` runs once the event loop has handled what is ready now.
    func endTurnSoon() {
        guard !turnEnding else { return }
        turnEnding = true
        loop.execute { self.endTurn() }
    }

    /// The end of a turn: the core's (home nodes reached, presence published, trunks with company out, lone packets
    /// held), then every queued datagram goes.
    private func endTurn() {
        core.endTurn(now: Self.time(), into: &output)
        handleEvents()
        scheduleTrunkHold()
        flushOutbox()
        turnEnding = false
        armCoreTimer()
    }

    /// Sends what the turn queued.
    func flushOutbox() {
        guard let udpSocket, udp != nil else {
            output.outbox.removeAll()
            return
        }
        for (address, code) in udpSocket.send(&output.outbox) {
            counters.sendFailed += 1
            logger.debug("datagram not sent", metadata: ["to": "\(Self.describe(address))", "error": "\(String(cString: strerror(code)))"])
        }
    }

    /// Wakes up for the earliest held trunk (a lone packet's wait for company ends).
    private func scheduleTrunkHold() {
        guard let deadline = core.trunks.nextDeadline, deadline < trunkTimer?.deadline ?? .max else { return }
        trunkTimer?.task.cancel()
        let task = loop.scheduleTask(deadline: .uptimeNanoseconds(UInt64(max(deadline, 0)) * 1_000)) {
            self.trunkTimer = nil
            guard self.udp != nil else { return }
            self.withCore { $0.expireTrunks(now: $1, into: &$2) }
            self.scheduleTrunkHold()
        }
        trunkTimer = (task, deadline)
    }

    /// Carries out the core's events, in order; events that handling them caused are handled in the same loop.
    func handleEvents() {
        guard !handlingEvents else { return }
        handlingEvents = true
        defer { handlingEvents = false }
        while !output.events.isEmpty {
            swap(&eventBatch, &output.events)
            for event in eventBatch { handle(event) }
            eventBatch.removeAll(keepingCapacity: true)
        }
    }

    private func handle(_ event: NodeEvent<SocketAddress>) {
        let now = Self.now()
        switch event {
        case .linkUp(let peer, let endpoint):
            logger.info("link up", metadata: ["peer": "\(peer)", "endpoint": "\(Self.describe(endpoint))"])
        case .linkDown(let peer, let reason):
            logger.info("link down", metadata: ["peer": "\(peer)", "reason": "\(reason)"])
        case .refused(let endpoint, let reason):
            logger.warning("link refused", metadata: ["endpoint": "\(Self.describe(endpoint))", "reason": "\(reason)"])
        case .call(let action):
            handleCall(action, now: now)
        case .ended(let id, let reason, let chains):
            transferOutcome(id, answered: false, reason: reason)
            noteChains(id, current: chains)
            endMedia(id, reason: reason)
        case .callBytes(let id, let inner):
            receiveCall(id, inner, now: now)
        case .chainUp(let id):
            noteChains(id, now: now)
        case .chainLost(let id, let why):
            logger.warning("call lost its chain", metadata: ["call": "\(id)", "reason": "\(why)"])
        case .chainSwitched(let id, let from, let to, let why):
            logger.info("call moved to another chain", metadata: [
                "call": "\(id)", "from": "\(from.map(\.description).joined(separator: ">"))",
                "to": "\(to.map(\.description).joined(separator: ">"))", "why": "\(why)"])
            chainHistory[id, default: ChainHistory()].switches.append(
                ChainSwitch(atMs: Self.wallNow(), from: from.map(\.checksummed), to: to.map(\.checksummed), why: why))
            noteChains(id, now: now)
        case .judged(let key, let tier, let sample):
            signVerdict(key, tier, sample)
        case .resolved(let id, let home):
            resolving.removeValue(forKey: id)?.succeed(home)
        case .unresolved(let id, let why):
            resolving.removeValue(forKey: id)?.fail(RPCError.failed(why))
        case .refuted(let wallet, let home, let why):
            logger.warning("gossip route not confirmed; asking the DHT", metadata: ["wallet": "\(wallet)", "home": "\(home)", "error": "\(why)"])
        case .placed(let id, let home, let resolvedAt):
            placed(id, home: home, resolvedAt: resolvedAt, now: now)
        case .notPlaced(let id, let why):
            placing.removeValue(forKey: id)?.promise.fail(RPCError.failed(why))
        case .lookedUp(let id, let outcome):
            lookups.removeValue(forKey: id)?.succeed(outcome)
        case .recordStored(let record, let acknowledgement):
            storeRecord(record, acknowledgement: acknowledgement)
        case .recordDropped(let key):
            let store = store
            persist { try store.deleteRecord(key: key) }
        case .published(let records):
            // The records' sequence numbers must survive a restart: keep our own records with the others.
            let store = store
            for record in records { persist { try store.saveRecord(record) } }
        case .clockSkew(let report):
            logger.warning("\(report)")
        }
    }

    /// Signs a relay's quality verdict on the signer's thread, not here: a relay whose link to a neighbour turns bad
    /// judges every call on it at once, and a thousand signatures (45 µs each) would hold all forwarding for 45 ms.
    private func signVerdict(_ key: ChainKey, _ tier: QualityTier, _ sample: QualitySample) {
        let counter = nextNoticeCounter()
        let (nodeKey, loop) = (nodeKey, loop)
        verdictSigner.async {
            let verdict = QualityVerdict.sign(call: key.call, tier: tier, sample: sample, counter: counter, key: nodeKey)
            let bytes = CallInner.verdict(verdict.serialize()).serialize()
            loop.execute {
                guard self.udp != nil else { return }
                self.withCore { $0.inject(key, bytes, now: $1, into: &$2) }
            }
        }
    }

    /// End-to-end bytes of a call that reached this end of its chain (the core took its signalling).
    private func receiveCall(_ id: CallID, _ inner: CallInner, now: Int64) {
        switch inner {
        case .media(let packet):
            guard let m = media[id] else {
                counters.mediaUnknownCall += 1
                return
            }
            if m.inbound(packet, nowMs: now) { core.mediaArrived(id, now: Self.time()) }
        case .ice(let sealed):
            receiveIce(id, sealed, now: now)
        case .control(let sealed):
            receiveControl(id, sealed, now: now)
        case .quelch(let notice):
            receiveQuelch(id, notice)
        case .verdict(let bytes):
            receiveVerdict(id, bytes, now: now)
        case .signal:
            break
        }
    }

    /// Sends end-to-end bytes of a call on its active chain.
    func sendCall(_ id: CallID, _ inner: CallInner) {
        withCore { $0.send(call: id, inner, now: $1, into: &$2) }
    }

    func hangUp(_ id: CallID, reason: CallEndReason = .normal) {
        withCore { $0.hangup(id, reason: reason, now: $1, into: &$2) }
    }

    /// Remembers a call's chains as they stand, so the summary names them after the call.
    func noteChains(_ id: CallID, now: Int64) {
        noteChains(id, current: relay.chains(call: id.raw, now: now))
    }

    /// Remembers a call's chains as the relay engine had them (`current`).
    func noteChains(_ id: CallID, current: [ChainInfo]) {
        let chains = shownChains(id, current: current)
        if !chains.isEmpty { chainHistory[id, default: ChainHistory()].chains = chains }
    }

    /// A call's chains as operators see them: the relay engine's while the call has an active chain; without one
    /// (a relay died and no chain could be built yet), the last active chain marked "lost", then those being built;
    /// after the relay engine let go of the call, the last ones noted.
    func shownChains(_ id: CallID, now: Int64) -> [ChainInfo] {
        shownChains(id, current: relay.chains(call: id.raw, now: now))
    }

    private func shownChains(_ id: CallID, current: [ChainInfo]) -> [ChainInfo] {
        let last = chainHistory[id]?.chains ?? []
        if current.isEmpty { return last }
        if current.contains(where: { $0.role == "active" }) { return current }
        let lost = last.filter { $0.role == "active" || $0.role == "lost" }.map { chain -> ChainInfo in
            var lost = chain
            lost.role = "lost"
            return lost
        }
        return lost + current
    }

    /// The link layer and gossip as the forwarding layer asks them.
    var routes: LinkRoutes<SocketAddress> { core.routes }

    /// What the call engine reported: media starts at answer; the core already answered or declined.
    private func handleCall(_ action: CallAction, now: Int64) {
        switch action {
        case .incoming(let id, let caller, let callee):
            logger.info("incoming call", metadata: ["call": "\(id)", "from": "\(caller)", "to": "\(callee)",
                                                    "auto-answer": "\(config.autoAnswer.rawValue)"])
        case .ringing(let id):
            owners[id]?.notify(method: "call.ringing", params: .object(["call": .string(id.description)]))
        case .established(let id, let keys):
            let caller = calls.calls[id]?.role == .caller
            startMedia(id, keys: keys, now: now)
            if media[id] != nil {
                openControl(id, keys: keys, caller: caller, bitrate: calls.calls[id]?.bitrate ?? config.bitrate, now: now)
                startDirect(id, keys: keys, caller: caller, now: now)
                transferOutcome(id, answered: true, reason: .normal)
            }
        case .send, .ended:
            break
        }
    }

    private func startMedia(_ id: CallID, keys: SRTPKeys, now: Int64) {
        guard let call = calls.calls[id] else { return }
        var mediaConfig = MediaConfig()
        mediaConfig.bitrate = call.bitrate
        mediaConfig.vad = config.vad
        mediaConfig.denoise = config.denoise
        mediaConfig.redundancy = config.redundancy
        let source: MediaSource
        let sink: MediaSink
        switch (call.role, config.autoAnswer) {
        case (.caller, _):
            (source, sink) = (.client, .client)
        case (.callee, .record):
            do {
                let path = try Recordings.path(directory: config.resolvedRecordDir, caller: call.remote, nowMs: Self.wallNow())
                (source, sink) = (.silence, .recorder(try WAVWriter(path: path), path: path))
            } catch {
                logger.error("cannot record call", metadata: ["call": "\(id)", "error": "\(error)"])
                hangUp(id, reason: .failed)
                return
            }
        case (.callee, _):
            (source, sink) = (.echo, .echo)
        }
        do {
            media[id] = try CallMedia(id: id, keys: keys, config: mediaConfig, source: source, sink: sink)
            startMediaTick()
        } catch {
            logger.error("cannot start media", metadata: ["call": "\(id)", "error": "\(error)"])
            hangUp(id, reason: .failed)
            return
        }
        let setupMs = setupStarted.removeValue(forKey: id).map { now - $0 }
        logger.info("call established", metadata: ["call": "\(id)", "peer": "\(call.remote)", "via": "\(call.via)",
                                                   "setup-ms": "\(setupMs.map(String.init) ?? "-")"])
        var params: [String: JSONValue] = ["call": .string(id.description), "codec": .string("opus/48000/1"),
                                           "bitrate": .number(Double(call.bitrate))]
        if let setupMs { params["setupMs"] = .number(Double(setupMs)) }
        owners[id]?.notify(method: "call.established", params: .object(params))
    }

    private func endMedia(_ id: CallID, reason: CallEndReason) {
        directs[id]?.end(now: Self.now())
        let m = media.removeValue(forKey: id)
        if let m {
            if case .recorder(let recording, _) = m.sink { writer.submit({ try recording.close() }, always: true) }
            failedRecordings.remove(id)
            let stats = m.stats
            finished[id] = stats
            endedMedia.add(stats)
        }
        setupStarted[id] = nil
        logger.info("call ended", metadata: ["call": "\(id)", "reason": "\(reason)"])
        if let owner = owners.removeValue(forKey: id) {
            var params: [String: JSONValue] = ["call": .string(id.description), "reason": .string(reason.description),
                                               "normal": .bool(reason == .normal)]
            if let record = calls.calls[id] { params["summary"] = callJSON(record) }
            owner.notify(method: "call.ended", params: .object(params))
        }
    }

    /// Drops what the shell kept of calls the call engine has forgotten (with the link costs, every 2 s).
    private func forgetEndedCalls() {
        finished = finished.filter { calls.calls[$0.key] != nil }
        directs = directs.filter { calls.calls[$0.key] != nil }
        controls = controls.filter { calls.calls[$0.key] != nil }
        chainHistory = chainHistory.filter { calls.calls[$0.key] != nil || placing[$0.key] != nil }
    }

    static func resolve(_ endpoint: HostPort, what: String) throws(ConfigError) -> SocketAddress {
        do {
            return try SocketAddress.makeAddressResolvingHost(endpoint.host, port: endpoint.port)
        } catch {
            throw ConfigError("\(what): cannot resolve host \(endpoint.host)")
        }
    }

    /// The TURN server of `turn`, `turn_user` and `turn_password_file` (all three or none), its host resolved to an
    /// address (libnice takes a numeric one) and the password read from its file (the first line).
    static func turnServer(_ config: NodeConfig) throws(ConfigError) -> TURNServer? {
        guard let turn = config.turn else {
            guard config.turnUser == nil, config.turnPasswordFile == nil else {
                throw ConfigError("turn_user and turn_password_file (--turn-user, --turn-password-file) need a turn server (--turn)")
            }
            return nil
        }
        guard let user = config.turnUser, !user.isEmpty, let file = config.turnPasswordFile else {
            throw ConfigError("turn \(turn): needs turn_user and turn_password_file (--turn-user, --turn-password-file)")
        }
        guard (1...65535).contains(turn.port) else { throw ConfigError("turn \(turn): the port must be 1–65535") }
        let password: [UInt8]
        do { password = try KeyStore.readPassphrase(fromFile: file) } catch { throw ConfigError("turn password file: \(error)") }
        guard let ip = try resolve(turn, what: "turn \(turn)").ipAddress, let text = String(validating: password, as: UTF8.self),
              !text.contains("\n") else {
            throw ConfigError("turn password file \(file): one line of UTF-8 text expected")
        }
        return TURNServer(host: ip, port: UInt16(turn.port), username: user, password: text)
    }

    static func describe(_ address: SocketAddress) -> String {
        guard let ip = address.ipAddress, let port = address.port else { return "\(address)" }
        return ip.contains(":") ? "[\(ip)]:\(port)" : "\(ip):\(port)"
    }
}

/// A call's chains as last seen, and its moves between them (`node-ctl calls`, the call summary).
struct ChainHistory {
    var chains: [ChainInfo] = []
    var switches: [ChainSwitch] = []
}

struct ChainSwitch: Codable {
    var atMs: Int64
    var from: [String]
    var to: [String]
    var why: String
}

/// What the core writes in a turn: datagrams sealed in place into the outbox, events for the shell.
struct NodeOutput: NodeSink {
    var outbox = Outbox()
    var events: [NodeEvent<SocketAddress>] = []

    mutating func append(length: Int, to address: SocketAddress, write: (UnsafeMutableRawBufferPointer) -> Void) {
        outbox.append(length: length, to: address, write: write)
    }

    mutating func event(_ event: NodeEvent<SocketAddress>) { events.append(event) }
}
