public enum CDImagesPlaceholder {}
