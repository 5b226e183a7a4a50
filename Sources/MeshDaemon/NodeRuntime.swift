import Foundation
import Logging
import MeshCall
import MeshControl
import MeshDHT
import MeshICE
import MeshIdentity
import MeshLink
import MeshMedia
import MeshRouting
import MeshStore
import MeshStun
import MeshWire
import NIOCore
import NIOPosix

/// Counters for input the node dropped above the link layer.
public struct NodeCounters: Sendable, Codable, Equatable {
    public var malformedApp = 0
    public var mediaUnknownCall = 0
    /// Call bytes over a chain that were malformed or named another call than the chain's.
    public var callWrongChain = 0
    public var resolveUnsolicited = 0
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

/// A running node: one UDP port with its links, the call engine, per-call media, and the control socket.
/// Every piece of state lives on one event loop; the protocol cores are pure and this class only runs
/// their actions (send a datagram, notify a client, start media).
public final class NodeRuntime: @unchecked Sendable {
    public let config: NodeConfig
    public let nodeKey: PrivateKey
    let logger: Logger
    let group: MultiThreadedEventLoopGroup
    let loop: EventLoop
    var links: LinkManager<SocketAddress>
    var calls: CallEngine
    var gossip: GossipEngine
    var relay: RelayEngine
    /// Trunks: data messages to each neighbour gathered into shared datagrams, and trunks from neighbours opened.
    var trunks: Trunker
    /// The pending trunk-hold timer and its deadline (monotonic µs).
    var trunkTimer: (task: Scheduled<Void>, deadline: Int64)?
    /// Whether the end of this turn of the event loop is scheduled (`endTurnSoon`).
    var turnEnding = false
    var finder: WalletFinder
    /// "Who hosts this wallet?" (docs/routing.md), and the callers waiting for each answer.
    var resolver: HomeResolver<SocketAddress>
    var resolving: [HomeResolver<SocketAddress>.ID: EventLoopPromise<Home>] = [:]
    var dht: DHTNode
    let store: NodeStore
    /// Every database write and recording append runs here, off the event loop (docs/storage.md).
    let writer = StoreWriter()
    /// Signs relays' quality verdicts off the event loop, in order (docs/architecture.md, "Isolation model").
    let verdictSigner = DispatchQueue(label: "verdict-signer", qos: .utility)
    let wallets: [PrivateKey]
    var lookups: [LookupID: EventLoopPromise<LookupOutcome>] = [:]
    /// When the hosted wallets' presence records are published, and with what (set up by `joinOverlay`).
    var presence: PresencePolicy
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
    /// Calls waiting for their first chain (docs/forwarding.md).
    var chainWaiters: [CallID: EventLoopPromise<Void>] = [:]
    /// Each call's chains as last seen and the switches between them, kept while the call is remembered.
    var chainHistory: [CallID: ChainHistory] = [:]
    /// Calls reaching their callee's home node (`reach`), by a number of their own.
    var reaches: [UInt64: PendingReach] = [:]
    var nextReach: UInt64 = 0
    var counters = NodeCounters()
    /// Answers STUN Binding Requests on the node's port (docs/stun.md).
    var stun = StunResponder(nowMs: NodeRuntime.now())
    /// The thread reading the node's UDP port; nil once the node stops (or the socket failed).
    var udp: UDPReader?
    var udpSocket: UDPSocket?
    /// Datagrams queued in this turn of the event loop (`sendDatagram`).
    var outbox = Outbox()
    /// The forwarding path's one buffer: each link payload read in place is decrypted into it, a forwarded packet
    /// is relabelled there and sealed from there into the outbox (docs/performance.md, "Allocations").
    var payloadBuffer: [UInt8] = []
    /// The messages of a trunk read in place, and the one of them being forwarded (reused the same way).
    var trunkMessages = TrunkMessages()
    var messageBuffer: [UInt8] = []
    var control: ControlServer?
    /// The `--metrics` HTTP endpoint (docs/metrics.md), when asked for.
    var metricsServer: Channel?
    let startedAt: Int64
    private let stopped: EventLoopPromise<Void>

    /// The core timer (`armCoreTimer`) and its deadline.
    var coreTimer: (task: Scheduled<Void>, at: Int64)?
    /// Whether the media tick is running (`startMediaTick`).
    var mediaTicking = false
    /// How often link costs (RTT with a loss penalty) are handed to gossip.
    static let costRefreshMs: Int64 = 2_000
    var nextCostRefresh: Int64 = 0

    /// A seed for a core's generator (the DHT's ids, the relay engine's labels and chain ids): the system CSPRNG
    /// mixed with the clock.
    static func seed(now: Int64) -> UInt64 {
        UInt64(bitPattern: now) ^ (UInt64(SecureRandom.uint32()) << 32 | UInt64(SecureRandom.uint32()))
    }

    /// The node's clock for everything but what is signed, shown as a time of day or stored: ms, the wall clock's
    /// reading when first read, then moving with the monotonic clock, so an NTP step moves no timer, RTT or playout
    /// deadline (docs/architecture.md, "Clocks").
    static func now() -> Int64 { clockBase.ms + Int64((NIODeadline.now().uptimeNanoseconds - clockBase.uptimeNs) / 1_000_000) }

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
        links.clock = clock
        dht.clock = clock
        gossip.clock = clock
        relay.clock = clock
        finder.clock = clock
        calls.clock = clock
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
        links = LinkManager(identity: nodeKey, config: config.linkConfig)
        calls = CallEngine(wallets: wallets)
        dht = DHTNode(identity: nodeKey, config: DHTConfig(), seed: Self.seed(now: now))
        let storedContacts = try store.contacts()
        dht.restore(contacts: storedContacts, records: try store.records(nowMs: Self.wallNow()), nowMs: now)
        // Gossip sequence numbers must grow across restarts: the clock's seconds do.
        gossip = GossipEngine(local: nodeKey.address, hosted: wallets, nodeKey: nodeKey,
                              sequence: UInt32(truncatingIfNeeded: Self.wallNow() / 1000), config: config.gossipConfig, nowMs: now)
        var finderConfig = WalletFinder.Config()
        finderConfig.maxTTL = UInt8(config.hopLimit)
        finder = WalletFinder(config: finderConfig)
        relay = RelayEngine(local: nodeKey.address, config: config.relayConfig, seed: Self.seed(now: now))
        resolver = HomeResolver(random: SecureRandom.bytes)
        var trunkConfig = TrunkConfig()
        trunkConfig.holdUs = Int64(config.trunkHoldMs) * 1_000
        trunks = Trunker(config: trunkConfig)
        presence = PresencePolicy(relayOnly: config.relayOnly, advertised: [], now: now)
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
            let now = Self.now()
            for (address, pinned) in peerTargets { self.run(self.links.connect(to: address, pinned: pinned, now: now)) }
            self.joinOverlay(bootstrap: (bootstrap + peerTargets.map(\.0)).compactMap(DHTEndpoint.init(socketAddress:)),
                             advertise: advertise.compactMap(DHTEndpoint.init(socketAddress:)), now: now)
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
            let now = Self.now()
            for call in self.calls.calls.values where call.state != .ended {
                self.runCall(self.calls.hangup(call.id, now: now))
            }
            self.leaveOverlay(now: now)
            for (neighbour, trunk) in self.trunks.flushAll() { self.sendTrunk(trunk, to: neighbour, now: now) }
            self.run(self.links.closeAll(now: now))
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

    /// The earliest deadline of the cores and of the shell's own upkeep (docs/architecture.md, "Clocks"). Read at
    /// the end of every turn, so it allocates nothing: no array of the cores' deadlines, and `min` of two at a time
    /// (`min` of more takes its arguments as an array).
    var nextDeadline: Int64 {
        var next = min(min(gossip.nextDeadline, links.nextDeadline ?? .max), min(calls.nextDeadline ?? .max, dht.nextDeadline ?? .max))
        next = min(min(next, relay.nextDeadline ?? .max), min(presence.nextCheck, min(nextContactSave, nextCostRefresh)))
        next = min(next, resolver.nextDeadline ?? .max)
        for pending in reaches.values { next = min(next, pending.deadline) }
        return next
    }

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
        let now = Self.now()
        func due(_ deadline: Int64?) -> Bool { deadline.map { $0 <= now } ?? false }
        if due(links.nextDeadline) { run(links.tick(now: now)) }
        if due(calls.nextDeadline) { runCall(calls.tick(now: now)) }
        if due(gossip.nextDeadline) { runGossip(gossip.tick(nowMs: now)) }
        overlayTick(now: now)
        if due(relay.nextDeadline) { runRelay(relay.tick(routes: routes, now: now)) }
        if now >= nextCostRefresh {
            nextCostRefresh = now + Self.costRefreshMs
            refreshLinkCosts(now: now)
            forgetEndedCalls()
        }
        if due(resolver.nextDeadline) { runResolver(resolver.tick(now: now)) }
        stepReaches()
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
        let now = Self.now()
        switch links.receive(datagram, from: source, now: now, payload: &payloadBuffer) {
        case .payload(let node):
            guard ChainMessage.isData(payloadBuffer) else {
                deliver(payloadBuffer, from: node)
                return
            }
            forward(&payloadBuffer, from: node, now: now)
        case .actions(let actions):
            run(actions)
        }
    }

    /// The node's port carries link datagrams (0xE1–0xE3), DHT datagrams (0xE4) and STUN (0–3, RFC 7983).
    func receive(datagram: [UInt8], from source: SocketAddress) {
        if let first = datagram.first, first <= 3 {
            receiveStun(datagram, from: source)
        } else if datagram.first == DHTWire.marker, let endpoint = DHTEndpoint(socketAddress: source) {
            runDHT(dht.receive(datagram, from: endpoint, nowMs: Self.now()))
        } else {
            run(links.receive(datagram, from: source, now: Self.now()))
        }
    }

    /// Queues a datagram; everything queued in one turn of the event loop (a batch of reads, a timer) leaves
    /// together when the turn ends, in as few sendmmsg calls as the kernel allows (docs/forwarding.md, "Batches").
    func sendDatagram(_ bytes: [UInt8], to address: SocketAddress) {
        guard udp != nil else { return }
        endTurnSoon()
        outbox.append(bytes, to: address)
    }

    /// Makes sure `endTurn` runs once the event loop has handled what is ready now.
    func endTurnSoon() {
        guard !turnEnding else { return }
        turnEnding = true
        loop.execute { self.endTurn() }
    }

    /// The end of a turn: trunks with company leave, lone packets start their hold, and every queued datagram goes.
    private func endTurn() {
        stepReaches()
        let now = Self.now()
        publishIfDue(now: now)
        for (neighbour, trunk) in trunks.endOfBatch(now: Self.monotonicUs()) { sendTrunk(trunk, to: neighbour, now: now) }
        scheduleTrunkHold()
        flushOutbox()
        turnEnding = false
        armCoreTimer()
    }

    /// Sends what the turn queued.
    func flushOutbox() {
        guard let udpSocket, udp != nil else {
            outbox.removeAll()
            return
        }
        for (address, code) in udpSocket.send(&outbox) {
            counters.sendFailed += 1
            logger.debug("datagram not sent", metadata: ["to": "\(Self.describe(address))", "error": "\(String(cString: strerror(code)))"])
        }
    }

    /// A data message to a neighbour: into its trunk when trunking is on, else a datagram of its own, sealed
    /// straight into the outbox.
    private func sendData(_ message: [UInt8], to neighbour: WalletAddress, now: Int64) {
        guard config.trunking, TrunkWire.canCarry(message) else {
            guard udp != nil, links.send(message, to: neighbour, now: now, into: &outbox) else { return }
            endTurnSoon()
            return
        }
        endTurnSoon()
        if let full = trunks.enqueue(message, to: neighbour, now: Self.monotonicUs()) { sendTrunk(full, to: neighbour, now: now) }
    }

    /// A finished trunk, sealed straight into the outbox; its storage goes back to the trunker for the next one.
    private func sendTrunk(_ trunk: consuming [UInt8], to neighbour: WalletAddress, now: Int64) {
        if udp != nil, links.send(trunk, to: neighbour, now: now, into: &outbox) { endTurnSoon() }
        trunks.recycle(consume trunk, to: neighbour)
    }

    /// Wakes up for the earliest held trunk (a lone packet's wait for company ends).
    private func scheduleTrunkHold() {
        guard let deadline = trunks.nextDeadline, deadline < trunkTimer?.deadline ?? .max else { return }
        trunkTimer?.task.cancel()
        let task = loop.scheduleTask(deadline: .uptimeNanoseconds(UInt64(max(deadline, 0)) * 1_000)) {
            self.trunkTimer = nil
            guard self.udp != nil else { return }
            let now = Self.now()
            for (neighbour, trunk) in self.trunks.expire(now: Self.monotonicUs()) { self.sendTrunk(trunk, to: neighbour, now: now) }
            self.scheduleTrunkHold()
        }
        trunkTimer = (task, deadline)
    }

    /// Runs link actions: datagrams out, payloads up, link events logged.
    func run(_ actions: [LinkAction<SocketAddress>]) {
        for action in actions {
            switch action {
            case .send(let bytes, let to):
                sendDatagram(bytes, to: to)
            case .deliver(let payload, let from):
                deliver(payload, from: from)
            case .up(let peer, let endpoint):
                logger.info("link up", metadata: ["peer": "\(peer)", "endpoint": "\(Self.describe(endpoint))"])
                runGossip(gossip.neighbourUp(peer, cost: Self.unknownLinkCost, nowMs: Self.now()))
            case .down(let peer, let reason):
                logger.info("link down", metadata: ["peer": "\(peer)", "reason": "\(reason)"])
                runGossip(gossip.neighbourDown(peer, nowMs: Self.now()))
                trunks.linkDown(peer)
                runRelay(relay.linkDown(peer, routes: routes, now: Self.now()))
            case .refused(let endpoint, let reason):
                logger.warning("link refused", metadata: ["endpoint": "\(Self.describe(endpoint))", "reason": "\(reason)"])
            }
        }
    }

    private func deliver(_ payload: [UInt8], from node: WalletAddress) {
        if ChainMessage.isData(payload) {
            var message = payload
            forward(&message, from: node, now: Self.now())
            return
        }
        if TrunkWire.isTrunk(payload) {
            let now = Self.now()
            trunks.open(payload, from: node, into: &trunkMessages)
            for message in trunkMessages {
                messageBuffer.removeAll(keepingCapacity: true)
                messageBuffer.append(contentsOf: message)
                forward(&messageBuffer, from: node, now: now)
            }
            return
        }
        if ChainMessage.claims(payload) {
            runRelay(relay.receive(payload, from: node, routes: routes, now: Self.now()))
            return
        }
        if WalletFinder.Message.claims(payload) {
            runFinder(finder.receive(payload, from: node, neighbours: links.upPeers, known: { self.gossip.route(to: $0)?.announcement },
                                     now: Self.now()))
            return
        }
        guard let message = AppMessage(parsing: payload) else {
            counters.malformedApp += 1
            return
        }
        let now = Self.now()
        switch message {
        case .resolveRequest(let query, let address):
            let reply = AppMessage.resolveReply(query: query, address: address, hosted: calls.hosts(address))
            run(links.send(reply.serialize(), to: node, now: now))
        case .resolveReply(let query, let address, let hosted):
            guard let actions = resolver.answered(query: query, wallet: address, hosted: hosted, from: node, now: now) else {
                counters.resolveUnsolicited += 1
                return
            }
            runResolver(actions)
        case .gossip(let body):
            runGossip(gossip.receive(body, from: node, nowMs: now))
        }
    }

    /// The hot path: a data message (its storage reused) relabelled and passed on, or handed up at a chain's end.
    private func forward(_ message: inout [UInt8], from node: WalletAddress, now: Int64) {
        switch relay.forward(&message, from: node, now: now) {
        case .pass(let to): sendData(message, to: to, now: now)
        case .actions(let actions): runRelay(actions)
        }
    }

    /// End-to-end bytes of a call that reached this end of its chain.
    private func deliverCall(_ raw: UInt64, _ bytes: [UInt8]) {
        let id = CallID(raw: raw)
        let now = Self.now()
        switch CallInner(parsing: bytes) {
        case .signal(let body)?:
            // The chain was set up for one call: signalling for any other is refused here.
            guard CallMessage(parsing: body)?.callID == id, let farEnd = relay.farEnd(call: raw) else {
                counters.callWrongChain += 1
                return
            }
            runCall(calls.receive(body, from: farEnd, now: now))
        case .media(let packet)?:
            guard let m = media[id] else {
                counters.mediaUnknownCall += 1
                return
            }
            if m.inbound(packet, nowMs: now) { calls.mediaArrived(id, now: now) }
        case .ice(let sealed)?:
            receiveIce(id, sealed, now: now)
        case .control(let sealed)?:
            receiveControl(id, sealed, now: now)
        case .quelch(let notice)?:
            receiveQuelch(id, notice)
        case .verdict(let bytes)?:
            receiveVerdict(id, bytes, now: now)
        case nil:
            counters.callWrongChain += 1
        }
    }

    /// Runs forwarding actions: link payloads out, call bytes up, chain events to the waiting calls.
    func runRelay(_ actions: [RelayAction]) {
        let now = Self.now()
        for action in actions {
            switch action {
            case .send(let bytes, let to):
                if ChainMessage.isData(bytes) {
                    sendData(bytes, to: to, now: now)
                } else {
                    if let trunk = trunks.flush(to) { sendTrunk(trunk, to: to, now: now) }
                    run(links.send(bytes, to: to, now: now))
                }
            case .deliver(let call, let bytes):
                deliverCall(call, bytes)
            case .chainUp(let call):
                noteChains(CallID(raw: call), now: now)
                chainWaiters.removeValue(forKey: CallID(raw: call))?.succeed(())
            case .chainFailed(let call, let why):
                let id = CallID(raw: call)
                if let waiter = chainWaiters.removeValue(forKey: id) {
                    waiter.fail(RPCError.failed("no relay chain to the callee's home node: \(why)"))
                } else {
                    logger.warning("call lost its chain", metadata: ["call": "\(id)", "reason": "\(why)"])
                    runCall(calls.chainLost(id, now: now))
                }
            case .chainSwitched(let call, let from, let to, let why):
                let id = CallID(raw: call)
                logger.info("call moved to another chain", metadata: [
                    "call": "\(id)", "from": "\(from.map(\.description).joined(separator: ">"))",
                    "to": "\(to.map(\.description).joined(separator: ">"))", "why": "\(why)"])
                chainHistory[id, default: ChainHistory()].switches.append(
                    ChainSwitch(atMs: Self.wallNow(), from: from.map(\.checksummed), to: to.map(\.checksummed), why: why))
                noteChains(id, now: now)
            case .judged(let key, let tier, let sample):
                let counter = nextNoticeCounter()
                // Signed on the signer's thread, not here: a relay whose link to a neighbour turns bad judges every call
                // on it at once, and a thousand signatures (45 µs each) would hold all forwarding for 45 ms.
                let (nodeKey, loop) = (nodeKey, loop)
                verdictSigner.async {
                    let verdict = QualityVerdict.sign(call: key.call, tier: tier, sample: sample, counter: counter, key: nodeKey)
                    let bytes = CallInner.verdict(verdict.serialize()).serialize()
                    loop.execute {
                        guard self.udp != nil else { return }
                        self.runRelay(self.relay.inject(key, bytes))
                    }
                }
            }
        }
    }

    func runFinder(_ actions: [WalletFinder.Action]) {
        let now = Self.now()
        for action in actions {
            switch action {
            case .send(let bytes, let to): run(links.send(bytes, to: to, now: now))
            case .found(let query, let announcement): runResolver(resolver.found(query: query, home: announcement.origin))
            }
        }
    }

    /// Remembers a call's chains as they stand, so the summary names them after the call.
    func noteChains(_ id: CallID, now: Int64) {
        let chains = shownChains(id, now: now)
        if !chains.isEmpty { chainHistory[id, default: ChainHistory()].chains = chains }
    }

    /// A call's chains as operators see them: the relay engine's while the call has an active chain; without one
    /// (a relay died and no chain could be built yet), the last active chain marked "lost", then those being built;
    /// after the relay engine let go of the call, the last ones noted.
    func shownChains(_ id: CallID, now: Int64) -> [ChainInfo] {
        let current = relay.chains(call: id.raw, now: now)
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
    var routes: LinkRoutes<SocketAddress> { LinkRoutes(links: links, gossip: gossip) }

    func runGossip(_ actions: [GossipAction]) {
        let now = Self.now()
        for case .send(let body, let to) in actions {
            run(links.send(AppMessage.gossip(body).serialize(), to: to, now: now))
        }
    }

    /// Cost of a link before its first RTT sample.
    static let unknownLinkCost: UInt16 = 100

    /// Hands link costs to gossip (which weighs routes, node routes included, by them).
    private func refreshLinkCosts(now: Int64) {
        for address in links.upPeers {
            guard let quality = links.quality(address), quality.rttMs != nil else { continue }
            runGossip(gossip.setCost(address, cost: Self.linkCost(rttMs: quality.rttMs, lossPercent: quality.lossPercent), nowMs: now))
        }
    }

    /// Link cost: smoothed RTT in ms (at least 1), doubled for every 10 % of ping loss; 100 before the first sample.
    static func linkCost(rttMs: Double?, lossPercent: Double) -> UInt16 {
        guard let rttMs else { return unknownLinkCost }
        return UInt16(clamping: Int((max(rttMs, 1) * (1 + lossPercent / 10)).rounded()))
    }

    /// Runs call actions: signalling out, auto-answer, media start and stop, client notifications.
    func runCall(_ actions: [CallAction]) {
        let now = Self.now()
        for action in actions {
            switch action {
            case .send(let body, _):
                guard let id = CallMessage(parsing: body)?.callID else { continue }
                runRelay(relay.send(call: id.raw, CallInner.signal(body).serialize()))
            case .incoming(let id, let caller, let callee):
                logger.info("incoming call", metadata: ["call": "\(id)", "from": "\(caller)", "to": "\(callee)",
                                                        "auto-answer": "\(config.autoAnswer.rawValue)"])
                switch config.autoAnswer {
                case .off: runCall(calls.hangup(id, reason: .declined, now: now))
                case .echo, .record: runCall(calls.answer(id, now: now))
                }
            case .ringing(let id):
                owners[id]?.notify(method: "call.ringing", params: .object(["call": .string(id.description)]))
            case .established(let id, let keys):
                let caller = calls.calls[id]?.role == .caller
                relay.authenticate(call: id.raw, key: ProbeKey(callerToCallee: caller ? keys.send : keys.receive,
                                                               calleeToCaller: caller ? keys.receive : keys.send))
                startMedia(id, keys: keys, now: now)
                if media[id] != nil {
                    openControl(id, keys: keys, caller: caller, bitrate: calls.calls[id]?.bitrate ?? config.bitrate, now: now)
                    startDirect(id, keys: keys, caller: caller, now: now)
                    transferOutcome(id, answered: true, reason: .normal)
                }
            case .ended(let id, let reason):
                transferOutcome(id, answered: false, reason: reason)
                noteChains(id, now: now)
                runRelay(relay.close(call: id.raw))
                endMedia(id, reason: reason)
            }
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
                runCall(calls.hangup(id, reason: .failed, now: now))
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
            runCall(calls.hangup(id, reason: .failed, now: now))
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
        chainHistory = chainHistory.filter { calls.calls[$0.key] != nil || chainWaiters[$0.key] != nil }
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
