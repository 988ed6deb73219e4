public enum CDProtocolPlaceholder {}
