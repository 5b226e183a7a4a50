/// Everything a node counts at one instant, as Prometheus metric families (docs/metrics.md). The node builds it on
/// its event loop (`NodeRuntime.metricsSnapshot()`); the `/metrics` endpoint renders it as exposition text and the
/// control socket's `node.metrics` returns it as JSON, which `node-ctl metrics` prints or renders the same way.
public struct MetricsSnapshot: Sendable, Codable, Equatable {
    public var families: [Family]

    public init(families: [Family] = []) { self.families = families }

    public enum Kind: String, Sendable, Codable {
        /// Only ever grows while the node runs (names end in `_total`).
        case counter
        /// Goes up and down.
        case gauge
    }

    /// One metric name: its type, its help line, and a sample per label set.
    public struct Family: Sendable, Codable, Equatable {
        public var name: String
        public var type: Kind
        public var help: String
        public var samples: [Sample]

        public init(name: String, type: Kind, help: String, samples: [Sample]) {
            self.name = name
            self.type = type
            self.help = help
            self.samples = samples
        }
    }

    public struct Sample: Sendable, Codable, Equatable {
        /// Label name → value (written sorted by name).
        public var labels: [String: String]
        public var value: Double

        public init(labels: [String: String] = [:], value: Double) {
            self.labels = labels
            self.value = value
        }

        /// `name{label="value",…}` as the exposition format writes a series (labels sorted by name).
        public func series(_ name: String) -> String {
            guard !labels.isEmpty else { return name }
            return name + "{" + labels.sorted { $0.key < $1.key }
                .map { "\($0.key)=\"\(MetricsSnapshot.escape($0.value, quotes: true))\"" }.joined(separator: ",") + "}"
        }
    }

    /// A family of one unlabelled sample.
    public mutating func add(_ name: String, _ type: Kind, _ help: String, _ value: some BinaryInteger) {
        add(name, type, help, Double(value))
    }

    public mutating func add(_ name: String, _ type: Kind, _ help: String, _ value: Double) {
        families.append(Family(name: name, type: type, help: help, samples: [Sample(value: value)]))
    }

    /// A family with one sample per value of a single label (`reason`, say), in the order given.
    public mutating func add(_ name: String, _ type: Kind, _ help: String, by label: String, _ values: KeyValuePairs<String, Int>) {
        families.append(Family(name: name, type: type, help: help,
                               samples: values.map { Sample(labels: [label: $0.key], value: Double($0.value)) }))
    }

    /// The sample of `name` with exactly these labels, if any.
    public func value(_ name: String, _ labels: [String: String] = [:]) -> Double? {
        families.first { $0.name == name }?.samples.first { $0.labels == labels }?.value
    }

    /// The text exposition format, version 0.0.4: a HELP and a TYPE line per family, then its samples.
    public func prometheusText() -> String {
        var text = ""
        for family in families {
            text += "# HELP \(family.name) \(Self.escape(family.help, quotes: false))\n"
            text += "# TYPE \(family.name) \(family.type.rawValue)\n"
            for sample in family.samples {
                text += "\(sample.series(family.name)) \(Self.format(sample.value))\n"
            }
        }
        return text
    }

    /// The media type of `prometheusText()`.
    public static let contentType = "text/plain; version=0.0.4; charset=utf-8"

    /// Backslash and newline are escaped in help text; label values also escape the double quote.
    static func escape(_ text: String, quotes: Bool) -> String {
        var out = ""
        for c in text {
            switch c {
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\"" where quotes: out += "\\\""
            default: out.append(c)
            }
        }
        return out
    }

    /// Integers without a fraction, other values as Swift prints them; NaN and infinities as Prometheus spells them.
    public static func format(_ value: Double) -> String {
        if value.isNaN { return "NaN" }
        if value.isInfinite { return value > 0 ? "+Inf" : "-Inf" }
        if value.rounded() == value, abs(value) < 1e15 { return String(Int64(value)) }
        return "\(value)"
    }
}
